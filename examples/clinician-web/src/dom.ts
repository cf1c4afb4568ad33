// A few lines instead of a UI framework. Text always goes in through textContent, never
// innerHTML, so nothing a record contains (notes are free text) can become markup.

type Child = Node | string | null | undefined | false;
type Props = {
  testid?: string;
  class?: string;
  data?: Record<string, string>;
  on?: Partial<{ [K in keyof HTMLElementEventMap]: (event: HTMLElementEventMap[K]) => void }>;
} & Record<string, unknown>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  const { testid, class: className, data, on, ...rest } = props;
  if (testid) element.dataset.testid = testid;
  if (className) element.className = className;
  for (const [key, value] of Object.entries(data ?? {})) element.dataset[key] = value;
  for (const [event, handler] of Object.entries(on ?? {})) {
    element.addEventListener(event, handler as EventListener);
  }
  // Everything else is a DOM property (value, disabled, type, href, hidden...).
  Object.assign(element, rest);
  element.append(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
  return element;
}

/** Replaces an element's children. */
export function fill(parent: Element, ...children: Child[]): void {
  parent.replaceChildren(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
}
