"""One zoo network as built by minicnn, PyTorch (NCHW) and Keras (NHWC), row against row.

The three traces do not have the same rows: PyTorch calls ``F.relu`` where minicnn has a
ReLU layer, Keras folds the activation into Conv2D (``activation="relu"``). The rows that do
the work are aligned on their kind (conv, relu, maxpool, flatten, dense, ...), minicnn's
sequence being the pivot, and each aligned row is checked: the same parameter count in the
three frameworks, and the same output shape once Keras' NHWC is read as NCHW.
"""
import difflib
import json
from dataclasses import dataclass, field

from . import render as R

FRAMEWORKS = ("minicnn", "torch", "keras")
FUSED = "fused"  # a Keras activation folded into the layer before it


@dataclass
class Slot:
    """One aligned row: for each framework its Row, FUSED, or None (it has no such step)."""
    kind: str
    cells: dict = field(default_factory=dict)

    def row(self, framework):
        cell = self.cells.get(framework)
        return cell if cell is not None and cell != FUSED else None

    def params(self):
        """{framework: parameter count} for the frameworks with a real row here."""
        return {fw: self.row(fw).params for fw in FRAMEWORKS if self.row(fw) is not None}

    def params_agree(self):
        counts = self.params()
        if not any(counts.values()):
            return True
        return len(counts) == len(FRAMEWORKS) and len(set(counts.values())) == 1

    def shapes_agree(self):
        shapes = []
        for fw in FRAMEWORKS:
            row = self.row(fw)
            if row is not None and row.output_shape is not None:
                s = row.output_shape
                if fw == "keras" and len(s) == 4:  # NHWC -> NCHW
                    s = (s[0], s[3], s[1], s[2])
                shapes.append(tuple(s))
        return len(set(shapes)) <= 1


def tokens(trace):
    """[(kind, Row or FUSED), ...] for the rows that do the work, fused activations split off."""
    out = []
    for row in trace.leaves:
        out.append((row.kind, row))
        if row.fused:
            out.append((row.fused, FUSED))
    return out


def align(traces):
    """[Slot, ...] aligning the traces' working rows on their kinds (minicnn is the pivot)."""
    pivot = tokens(traces["minicnn"])
    slots = [Slot(kind, {"minicnn": row}) for kind, row in pivot]
    inserts = {}  # pivot position -> [Slot, ...] placed before it
    for fw in FRAMEWORKS[1:]:
        if fw not in traces:
            continue
        other = tokens(traces[fw])
        matcher = difflib.SequenceMatcher(None, [k for k, _ in pivot], [k for k, _ in other],
                                          autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            paired = min(i2 - i1, j2 - j1) if tag in ("equal", "replace") else 0
            for t in range(paired):
                slots[i1 + t].cells[fw] = other[j1 + t][1]
            extra = other[j1 + paired:j2]
            if extra:
                here = inserts.setdefault(i1 + paired, [])
                for t, (kind, row) in enumerate(extra):
                    # share a slot with another framework's extra row of the same kind
                    match = next((s for s in here if s.kind == kind and fw not in s.cells), None)
                    if match is None:
                        match = Slot(kind, {})
                        here.append(match)
                    match.cells[fw] = row
    merged = []
    for p in range(len(slots) + 1):
        merged += inserts.get(p, [])
        if p < len(slots):
            merged.append(slots[p])
    return merged


def param_sequences(traces):
    """{framework: [count, ...]} of the rows that have parameters, in call order."""
    return {fw: [r.params for r in t.leaves if r.params] for fw, t in traces.items()}


def agree(traces, slots):
    sequences = param_sequences(traces)
    same = len({tuple(s) for s in sequences.values()}) == 1
    return same and all(s.params_agree() for s in slots)


# -- rendering --------------------------------------------------------------------------------
def _compact(shape):
    return "" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


def _short_label(fw, row):
    if row.function:
        return row.name
    if fw == "minicnn":
        return row.type
    return row.name


def _cell(fw, slot, traces):
    cell = slot.cells.get(fw)
    if cell is None:
        return ["", ""]
    if cell == FUSED:
        return [f"({slot.kind})", "fused"]
    label = _short_label(fw, cell)
    if cell.status == "failed":
        return [label, "✗ failed"]
    return [label, _compact(cell.output_shape)]


def _verdict(slot):
    if not slot.params_agree():
        return "✗ params"
    if not slot.shapes_agree():
        return "✗ shape"
    return "✓"


def _params_cell(slot):
    counts = slot.params()
    values = sorted(set(counts.values()))
    if not values or values == [0]:
        return "–"
    if len(values) == 1:
        return R.count(values[0])
    return "/".join(R.count(counts.get(fw, 0)) for fw in FRAMEWORKS)


def text(traces, slots, explain=False):
    m = traces["minicnn"]
    heads = ["#", "minicnn", "[N,C,H,W]", "PyTorch", "[N,C,H,W]", "Keras", "[N,H,W,C]",
             "params", ""]
    body = []
    for i, slot in enumerate(slots, 1):
        body.append([str(i)] + _cell("minicnn", slot, traces) + _cell("torch", slot, traces)
                    + _cell("keras", slot, traces) + [_params_cell(slot), _verdict(slot)])
    widths = [max(len(h), *(len(r[c]) for r in body)) for c, h in enumerate(heads)]
    gaps = [2, 1, 2, 1, 2, 1, 2, 1]
    while sum(widths) + sum(gaps) > R.WIDTH:
        label_cols = [1, 3, 5]
        widest = max(label_cols, key=lambda c: widths[c])
        widths[widest] -= 1

    def line(values):
        parts = []
        for c, (v, w) in enumerate(zip(values, widths)):
            if len(v) > w:
                v = v[:w - 1] + "…"
            parts.append(v.rjust(w) if c in (0, 7) else v.ljust(w))
        return "".join(p + (" " * gaps[c] if c < len(gaps) else "")
                       for c, p in enumerate(parts)).rstrip()

    k = traces.get("keras")
    out = [f"{m.model}: minicnn, PyTorch (NCHW) and Keras (NHWC) side by side, "
           f"N = batch = {m.batch}",
           f"input {R.shape(m.input_shape)}" + (f", Keras {R.shape(k.input_shape)}" if k else ""),
           "F.* and x.* are calls in PyTorch's forward; (relu) fused: Keras' activation= argument",
           "", line(heads)]
    rule = "─" * min(R.WIDTH, sum(widths) + sum(gaps))
    out.append(rule)
    indent = " " * (widths[0] + gaps[0] + 2)
    for slot, values in zip(slots, body):
        out.append(line(values))
        if explain:
            out += _explain_lines(slot, indent)
    out.append(rule)
    out += summary_lines(traces, slots)
    for fw in FRAMEWORKS:
        t = traces.get(fw)
        if t is not None and not t.ok:
            out.append(f"✗ {R.FRAMEWORKS[fw]} stopped at its row {t.failure.row}:")
            out += R.failure_lines(t, "  ")
    return "\n".join(out) + "\n"


def _explain_lines(slot, indent):
    base = slot.row("minicnn")
    lines = list(base.explain) if base is not None else []
    for fw in ("torch", "keras"):
        row = slot.row(fw)
        if row is None:
            continue
        extra = [x for x in row.explain if x not in lines and not x.startswith("padding")]
        lines += [f"{R.FRAMEWORKS[fw]}: {x}" + ("  (H·W·C order)" if fw == "keras"
                                                and "·" in x and "=" in x else "")
                  for x in extra]
    return [indent + x for x in lines]


def summary_lines(traces, slots):
    sequences = param_sequences(traces)
    ok = agree(traces, slots)
    counts = ", ".join(R.count(c) for c in sequences["minicnn"])
    lines = []
    if ok:
        lines.append("✓ parameter counts agree layer by layer in minicnn, PyTorch and Keras:")
        lines.append(f"    {counts}")
    else:
        lines.append("✗ parameter counts differ:")
        lines += [f"    {R.FRAMEWORKS[fw]:<8} " + ", ".join(R.count(c) for c in seq)
                  for fw, seq in sequences.items()]
    for fw, t in traces.items():
        tot = t.totals()
        lines.append(f"  {R.FRAMEWORKS[fw]:<8} {R.count(tot['params'])} parameters, "
                     f"{R.si(tot['macs'])} multiply-adds, output {R.shape(t.output_shape)}")
    return lines


def markdown(traces, slots, explain=False):
    m = traces["minicnn"]
    heads = ["#", "minicnn", "[N, C, H, W]", "PyTorch", "[N, C, H, W]", "Keras", "[N, H, W, C]",
             "params", "check"] + (["arithmetic"] if explain else [])
    out = [f"**{m.model}: minicnn, PyTorch (NCHW) and Keras (NHWC), N = batch = {m.batch}**", "",
           "| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for i, slot in enumerate(slots, 1):
        values = ([str(i)] + _cell("minicnn", slot, traces) + _cell("torch", slot, traces)
                  + _cell("keras", slot, traces) + [_params_cell(slot), _verdict(slot)])
        if explain:
            values.append("<br>".join(x.strip() for x in _explain_lines(slot, "")))
        out.append("| " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    out.append("")
    out += [f"- {line.strip()}" for line in summary_lines(traces, slots)]
    return "\n".join(out) + "\n"


def to_dict(traces, slots):
    return {
        "model": traces["minicnn"].model, "batch": traces["minicnn"].batch,
        "frameworks": {fw: t.to_dict() for fw, t in traces.items()},
        "aligned": [{"kind": s.kind, **{fw: (None if s.cells.get(fw) is None else
                                             FUSED if s.cells[fw] == FUSED else s.cells[fw].index)
                                        for fw in FRAMEWORKS},
                     "params_agree": s.params_agree(), "shapes_agree": s.shapes_agree()}
                    for s in slots],
        "params": param_sequences(traces),
        "params_agree": agree(traces, slots),
    }


def render(traces, format="text", explain=False):
    slots = align(traces)
    if format == "text":
        return text(traces, slots, explain)
    if format == "markdown":
        return markdown(traces, slots, explain)
    if format == "json":
        return json.dumps(to_dict(traces, slots), ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {format!r}: text, markdown or json")


def trace_all(name, input_shape=None, batch=1):
    """{framework: Trace} for a zoo name built by minicnn, PyTorch and Keras.

    input_shape: (C, H, W) without the batch (the zoo's spec if None); Keras gets (H, W, C).
    """
    from . import trace
    from .load import zoo_model
    traces = {}
    for fw in FRAMEWORKS:
        model, default = zoo_model(name, fw)
        shape = default
        if input_shape is not None:
            c, h, w = input_shape
            shape = (h, w, c) if fw == "keras" else (c, h, w)
        traces[fw] = trace(model, shape, batch, name=name)
    return traces
