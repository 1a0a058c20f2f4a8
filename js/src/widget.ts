// Placeholder front end: replaced by the canvas heatmap (widget issue).
type RenderArgs = { model: { get(name: string): unknown }; el: HTMLElement };

function render({ model, el }: RenderArgs): void {
  const p = document.createElement("div");
  p.textContent = String(model.get("title") ?? "heatwidget");
  el.appendChild(p);
}

export default { render };
