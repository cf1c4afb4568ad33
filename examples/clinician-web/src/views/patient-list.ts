// "My patients": whatever the gateway returns *is* the list. Row-level security decides which
// patients a clinician sees; the app never filters, so it cannot show more than it may.

import { MyPatientsDocument, type MyPatientsQuery } from "../generated/graphql";
import { fill, h } from "../dom";
import type { AppContext } from "./context";

const PAGE_SIZE = 10;
const SEARCH_DELAY_MS = 300;

export class PatientList {
  readonly element: HTMLElement;
  private readonly rows: HTMLTableSectionElement;
  private readonly prev: HTMLButtonElement;
  private readonly next: HTMLButtonElement;
  private readonly pageLabel: HTMLSpanElement;
  private readonly ctx: AppContext;

  private search = "";
  // The schema pages forwards only (first/after), so "previous" means going back to the
  // cursor this page was fetched with: a stack of the `after` of every page visited.
  private afters: (string | null)[] = [null];
  private endCursor: string | null = null;
  private generation = 0;
  private searchTimer: number | undefined;

  constructor(ctx: AppContext, open: (patientId: string) => void) {
    this.ctx = ctx;
    const searchInput = h("input", {
      testid: "search-input",
      type: "search",
      placeholder: "Search by name or MRN",
      ariaLabel: "Search patients",
      on: {
        input: () => {
          window.clearTimeout(this.searchTimer);
          this.searchTimer = window.setTimeout(() => {
            this.search = searchInput.value.trim();
            this.afters = [null];
            void this.load();
          }, SEARCH_DELAY_MS);
        },
      },
    });
    this.rows = h("tbody");
    this.rows.addEventListener("click", (event) => {
      const row = (event.target as Element).closest<HTMLTableRowElement>("tr[data-id]");
      if (row?.dataset.id) open(row.dataset.id);
    });
    this.prev = h("button", {
      testid: "prev-page",
      type: "button",
      textContent: "Previous",
      disabled: true,
      on: { click: () => this.go(-1) },
    });
    this.next = h("button", {
      testid: "next-page",
      type: "button",
      textContent: "Next",
      disabled: true,
      on: { click: () => this.go(1) },
    });
    this.pageLabel = h("span", { testid: "page-number" });
    this.element = h(
      "section",
      { testid: "patient-list", class: "patient-list" },
      h("h2", {}, "My patients"),
      searchInput,
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, h("th", {}, "MRN"), h("th", {}, "Name"), h("th", {}, "Born"))),
        this.rows,
      ),
      h("nav", { class: "pager" }, this.prev, this.pageLabel, this.next),
    );
  }

  private go(step: 1 | -1): void {
    if (step === 1 && this.endCursor) this.afters.push(this.endCursor);
    if (step === -1 && this.afters.length > 1) this.afters.pop();
    void this.load();
  }

  async load(): Promise<void> {
    // A slow answer to an earlier search must not overwrite a newer one.
    const generation = ++this.generation;
    this.element.dataset.state = "loading";
    this.prev.disabled = this.next.disabled = true;
    const after = this.afters[this.afters.length - 1];
    try {
      const { data } = await this.ctx.client.query({
        query: MyPatientsDocument,
        variables: { first: PAGE_SIZE, after, search: this.search || null },
      });
      if (generation !== this.generation || !data) return;
      this.render(data);
      this.ctx.clearError();
    } catch (error) {
      if (generation !== this.generation) return;
      fill(this.rows);
      this.ctx.fail(error);
    } finally {
      if (generation === this.generation) this.element.dataset.state = "ready";
    }
  }

  private render(data: MyPatientsQuery): void {
    const { edges, pageInfo } = data.patients;
    fill(
      this.rows,
      ...edges.map(({ node }) =>
        h(
          "tr",
          { testid: "patient-row", data: { id: node.id, mrn: node.mrn }, class: "clickable" },
          h("td", {}, node.mrn),
          h("td", {}, h("a", { href: `#/patients/${encodeURIComponent(node.id)}` }, `${node.familyName}, ${node.givenName}`)),
          h("td", {}, node.birthDate),
        ),
      ),
      edges.length === 0 && h("tr", { testid: "no-patients" }, h("td", { colSpan: 3 }, "No patients.")),
    );
    this.endCursor = pageInfo.endCursor;
    this.next.disabled = !pageInfo.hasNextPage || !pageInfo.endCursor;
    this.prev.disabled = this.afters.length <= 1;
    this.pageLabel.textContent = `Page ${this.afters.length}`;
  }
}
