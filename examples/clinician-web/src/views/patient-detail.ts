// One patient: demographics, care team, and, for clinicians, the clinical notes with
// optimistic-concurrency saving; for coordinators, assigning clinicians instead of notes.

import {
  AssignClinicianDocument,
  ClinicianDirectoryDocument,
  PatientDetailDocument,
  UpdatePatientNotesDocument,
  type CareRole,
  type PatientDetailQuery,
} from "../generated/graphql";
import { fill, h } from "../dom";
import { problem, problems, type Problem } from "../errors";
import type { AppContext } from "./context";

type Patient = NonNullable<PatientDetailQuery["patient"]>;
type CareTeam = Patient["careTeam"];

const CARE_ROLES: { value: CareRole; label: string }[] = [
  { value: "ATTENDING", label: "Attending" },
  { value: "CONSULTING", label: "Consulting" },
  { value: "NURSING", label: "Nursing" },
  { value: "CARE_COORDINATION", label: "Care coordination" },
];

export class PatientDetail {
  readonly element: HTMLElement;
  private readonly ctx: AppContext;
  private generation = 0;

  constructor(ctx: AppContext) {
    this.ctx = ctx;
    this.element = h("section", { testid: "patient-detail", class: "patient-detail" });
  }

  async open(id: string): Promise<void> {
    const generation = ++this.generation;
    this.element.dataset.state = "loading";
    fill(this.element, h("p", {}, "Loading…"));
    const patient = await this.fetch(id);
    if (generation !== this.generation) return;
    if (patient) this.render(patient.record, patient.notesHidden);
    else fill(this.element, backLink());
    this.element.dataset.state = "ready";
  }

  /**
   * Reads the patient. Notes are not even asked for unless the UI believes the user is a
   * clinician; if they are asked for and refused anyway (FORBIDDEN on that one field, the rest
   * of the patient still resolves), the screen simply shows no notes.
   */
  private async fetch(id: string): Promise<{ record: Patient; notesHidden: boolean } | undefined> {
    // Only a known clinician asks: an unmapped role must not request the column at all.
    const withNotes = this.ctx.role === "clinician";
    let result;
    try {
      result = await this.ctx.client.query({
        query: PatientDetailDocument,
        variables: { id, withNotes },
        errorPolicy: "all",
      });
    } catch (error) {
      this.ctx.fail(error);
      return undefined;
    }
    const { data, error } = result;
    const isNotesRefusal = (p: Problem) => p.code === "FORBIDDEN" && p.path?.at(-1) === "clinicalNotes";
    const list = error ? problems(error) : [];
    const notesRefused = list.some(isNotesRefusal);
    if (list.some((p) => !isNotesRefusal(p))) {
      this.ctx.fail(error);
      return undefined;
    }
    if (!data?.patient) {
      // `patient` is null both when it does not exist and when RLS hides it: by design the
      // two cannot be told apart, so neither does the message.
      this.ctx.report({ code: "NOT_FOUND", message: "patient is null" });
      return undefined;
    }
    this.ctx.clearError();
    return { record: data.patient, notesHidden: !withNotes || notesRefused };
  }

  private render(patient: Patient, notesHidden: boolean): void {
    this.element.dataset.id = patient.id;
    this.element.dataset.mrn = patient.mrn;
    const careTeam = h("ul", { testid: "care-team", class: "care-team" });
    this.renderCareTeam(careTeam, patient.careTeam);
    fill(
      this.element,
      backLink(),
      h("h2", { testid: "patient-name" }, `${patient.givenName} ${patient.familyName}`),
      h(
        "dl",
        { class: "demographics" },
        h("dt", {}, "MRN"),
        h("dd", { testid: "patient-mrn" }, patient.mrn),
        h("dt", {}, "Born"),
        h("dd", {}, patient.birthDate),
        h("dt", {}, "Last changed"),
        h("dd", { testid: "patient-updated" }, new Date(patient.updatedAt).toLocaleString()),
      ),
      h("h3", {}, "Care team"),
      careTeam,
      this.ctx.role === "coordinator" && this.assignControl(patient, careTeam),
      notesHidden
        ? h("p", { testid: "notes-hidden", class: "muted" }, "Clinical notes are visible to clinicians only.")
        : this.notesEditor(patient),
    );
  }

  private renderCareTeam(list: HTMLUListElement, team: CareTeam): void {
    fill(
      list,
      ...team.map((member) =>
        h(
          "li",
          { data: { clinicianId: member.clinician.id } },
          `${member.clinician.displayName} — ${label(member.careRole)}`,
        ),
      ),
      team.length === 0 && h("li", { class: "muted" }, "Nobody assigned."),
    );
  }

  private notesEditor(patient: Patient): HTMLElement {
    const textarea = h("textarea", {
      testid: "notes-textarea",
      rows: 10,
      value: patient.clinicalNotes ?? "",
      ariaLabel: "Clinical notes",
      on: { input: () => status.replaceChildren() },
    });
    const status = h("div", { class: "status", ariaLive: "polite" });
    const save = h("button", { testid: "save-notes", type: "button", textContent: "Save" });
    let version = patient.version;

    // Saves `draft` against `version`. On CONFLICT the newer record is shown next to the
    // user's text, which stays in the textarea untouched: nothing typed is ever lost.
    const attempt = async (draft: string): Promise<void> => {
      save.disabled = true;
      status.replaceChildren(h("span", { class: "muted" }, "Saving…"));
      try {
        const { data } = await this.ctx.client.mutate({
          mutation: UpdatePatientNotesDocument,
          variables: { id: patient.id, expectedVersion: version, clinicalNotes: draft },
        });
        if (data) version = data.updatePatient.version;
        this.ctx.clearError();
        fill(status, h("p", { testid: "saved-message", class: "ok" }, "Saved."));
      } catch (error) {
        if (problem(error).code !== "CONFLICT") {
          status.replaceChildren();
          this.ctx.fail(error);
          return;
        }
        const newer = await this.fetch(patient.id);
        if (!newer) {
          status.replaceChildren();
          return;
        }
        version = newer.record.version;
        fill(status, this.conflictPanel(newer.record, () => void attempt(textarea.value)));
      } finally {
        save.disabled = false;
      }
    };
    save.addEventListener("click", () => void attempt(textarea.value));

    return h("div", { class: "notes" }, h("h3", {}, "Clinical notes"), textarea, h("div", { class: "actions" }, save), status);
  }

  private conflictPanel(newer: Patient, retry: () => void): HTMLElement {
    return h(
      "div",
      { testid: "conflict-message", class: "conflict", role: "alert" },
      h("p", {}, h("strong", {}, "This patient was changed by someone else."), " Their version is below; your text is still in the editor."),
      h("pre", { testid: "conflict-theirs", class: "theirs" }, newer.clinicalNotes ?? ""),
      h("p", { class: "muted" }, `Changed ${new Date(newer.updatedAt).toLocaleString()} (version ${newer.version}).`),
      h("button", { testid: "retry-save", type: "button", textContent: "Retry with my text", on: { click: retry } }),
    );
  }

  /** Coordinators: pick anyone from the directory and add them to the care team. */
  private assignControl(patient: Patient, careTeam: HTMLUListElement): HTMLElement {
    const select = h("select", { testid: "assign-select", ariaLabel: "Clinician to assign" }, h("option", { value: "" }, "Loading…"));
    const roleSelect = h(
      "select",
      { testid: "assign-role", ariaLabel: "Care role" },
      ...CARE_ROLES.map((r) => h("option", { value: r.value }, r.label)),
    );
    const button = h("button", { testid: "assign-button", type: "button", textContent: "Assign clinician", disabled: true });
    const status = h("div", { class: "status", ariaLive: "polite" });

    void this.ctx.client
      .query({ query: ClinicianDirectoryDocument })
      .then(({ data }) => {
        const people = (data?.clinicians ?? []).filter((c) => c.active);
        fill(select, h("option", { value: "" }, "Choose a clinician…"), ...people.map((c) => h("option", { value: c.id }, c.displayName)));
        button.disabled = false;
      })
      .catch((error: unknown) => {
        fill(select, h("option", { value: "" }, "Directory unavailable"));
        this.ctx.fail(error);
      });

    button.addEventListener("click", async () => {
      if (!select.value) return;
      button.disabled = true;
      status.replaceChildren();
      try {
        const { data } = await this.ctx.client.mutate({
          mutation: AssignClinicianDocument,
          variables: { patientId: patient.id, clinicianId: select.value, careRole: roleSelect.value as CareRole },
        });
        if (data) this.renderCareTeam(careTeam, data.assignClinician.careTeam);
        this.ctx.clearError();
        fill(status, h("p", { testid: "assign-message", class: "ok" }, "Assigned."));
      } catch (error) {
        if (problem(error).code === "CONFLICT") {
          fill(status, h("p", { testid: "assign-message" }, "Already on this patient's care team."));
        } else {
          this.ctx.fail(error);
        }
      } finally {
        button.disabled = false;
      }
    });

    return h("div", { class: "assign" }, h("h3", {}, "Assign clinician"), select, roleSelect, button, status);
  }
}

function backLink(): HTMLElement {
  return h("a", { href: "#/", testid: "back-to-list", class: "back" }, "← My patients");
}

function label(role: CareRole): string {
  return CARE_ROLES.find((r) => r.value === role)?.label ?? role;
}
