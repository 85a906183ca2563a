"""A Trace as text (the default, at most 100 columns), markdown or JSON."""
import json
import textwrap

WIDTH = 100
LAYOUTS = {"NCHW": "[N, C, H, W]", "NHWC": "[N, H, W, C]"}
FRAMEWORKS = {"minicnn": "minicnn", "torch": "PyTorch", "keras": "Keras"}
AXES = {"NCHW": "N = batch = {n}, then channels C, height H, width W",
        "NHWC": "N = batch = {n}, then height H, width W, channels C (Keras is channels-last)"}


# -- numbers ----------------------------------------------------------------------------
def count(n):
    return f"{n:,}"


def si(n):
    """7526400 -> '7.53M'."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.{1 if unit == 'k' else 2}f}{unit}"
    return str(n)


def nbytes(n):
    """1204224 -> '1.20 MB' (decimal units, as torchinfo)."""
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= scale:
            return f"{n / scale:.{1 if unit == 'kB' else 2}f} {unit}"
    return f"{n} B"


def shape(s):
    return "" if s is None else "[" + ", ".join(str(d) for d in s) + "]"


def layout_line(trace):
    return f"shapes are {LAYOUTS[trace.layout]}: {AXES[trace.layout].format(n=trace.batch)}"


# -- cells of a row -------------------------------------------------------------------------
def cells(trace, row, frozen_column):
    if row.status == "failed":
        out = "✗ failed"
    elif row.status == "unfinished":
        out = "✗ (inside)"
    else:
        out = shape(row.output_shape)
    if row.container:
        params = f"({count(row.nested_params)})" if row.nested_params else ""
        macs = mem = ""
    else:
        params = count(row.trainable) if row.trainable else "–"
        macs = si(row.macs) if row.macs else "–"
        mem = "" if row.status != "ok" else ("view" if row.shared else nbytes(row.memory))
    label = row.label + (f" + {row.fused}" if row.fused else "")
    values = [str(row.index), str(row.depth), "  " * row.depth + label, shape(row.input_shape),
              out, params]
    if frozen_column:
        values.append(count(row.frozen) if row.frozen else "–")
    return values + [macs, mem]


def _headers(frozen_column):
    heads = ["#", "d", "layer (type)", "input", "output", "trainable"]
    if frozen_column:
        heads.append("frozen")
    return heads + ["MACs", "memory"]


def _fit(rows, heads, flex=2, width=WIDTH):
    """Column widths; the flexible (layer) column is cut to keep the line within ``width``."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(heads)]
    total = sum(widths) + 2 * (len(widths) - 1)
    if total > width:
        widths[flex] = max(12, widths[flex] - (total - width))
    return widths


def _line(values, widths, right):
    parts = []
    for i, (v, w) in enumerate(zip(values, widths)):
        if len(v) > w:
            v = v[:w - 1] + "…"
        parts.append(v.rjust(w) if i in right else v.ljust(w))
    return "  ".join(parts).rstrip()


def _wrap(text, indent, width=WIDTH, first=""):
    lines = []
    for k, para in enumerate(text.splitlines()):
        lines += textwrap.wrap(para, width, initial_indent=indent + (first if k == 0 else ""),
                               subsequent_indent=indent + "  " + " " * len(first if k == 0 else ""),
                               break_on_hyphens=False) or [indent]
    return lines


def failure_lines(trace, indent):
    """✗ expected / received, the exception's own words, then the fix."""
    f = trace.failure
    parts = [f"expected {f.expected}" if f.expected else "",
             f"received {f.received}" if f.received else ""]
    head = ", ".join(p for p in parts if p)
    lines = _wrap(f"✗ {head}" if head else f"✗ {f.layer}", indent)
    lines += _wrap(f.error, indent + "  ")
    for fix in f.fix:
        lines += _wrap(fix, indent, first="fix: ")
    return lines


def title(trace):
    fw = FRAMEWORKS[trace.framework]
    return f"{trace.model} ({fw}), input {shape(trace.input_shape)} {trace.dtype}"


def totals_lines(trace):
    t = trace.totals()
    n = trace.batch
    lines = [
        f"parameters      {count(t['params'])}  (trainable {count(t['trainable'])}, frozen "
        f"{count(t['frozen'])}): {nbytes(t['param_bytes'])}",
        f"multiply-adds   {si(t['macs'])} at batch {n}  ({si(t['macs_per_sample'])} per sample)",
        f"memory          input {nbytes(t['input_bytes'])} + parameters "
        f"{nbytes(t['param_bytes'])} + activations {nbytes(t['activation_bytes'])}",
        f"                forward pass {nbytes(t['forward_bytes'])}, forward + backward "
        f"{nbytes(t['forward_backward_bytes'])} (+ their gradients)",
    ]
    if not trace.ok:
        lines.append(f"(totals up to row {trace.failure.row}, where the forward pass stopped)")
    return lines


def text(trace, explain=False):
    frozen_column = True  # always shown: "0 frozen" is information too
    heads = _headers(frozen_column)
    body = [cells(trace, r, frozen_column) for r in trace.rows]
    widths = _fit(body, heads)
    right = {0, 1} | set(range(5, len(heads)))
    rule = "─" * min(WIDTH, sum(widths) + 2 * (len(widths) - 1))
    out = [title(trace), layout_line(trace), "", _line(heads, widths, right), rule]
    indent0 = sum(widths[:2]) + 4
    for row, values in zip(trace.rows, body):
        out.append(_line(values, widths, right))
        indent = " " * (indent0 + 2 * row.depth + 2)
        if explain or row.status == "failed":
            for line in row.explain:
                out += _wrap(line, indent)
        if row.status == "failed" and trace.failure is not None:
            out += failure_lines(trace, indent)
    out.append(rule)
    out += totals_lines(trace)
    out.append(legend(trace))
    return "\n".join(out) + "\n"


def legend(trace):
    parts = ["d: nesting depth"]
    if any(r.container and r.nested_params for r in trace.rows):
        parts.append("(n): parameters inside")
    if any(r.shared for r in trace.rows):
        parts.append("view: no new memory")
    parts.append("MACs: multiply-adds for the batch")
    return " · ".join(parts)


def markdown(trace, explain=False):
    frozen_column = True  # always shown: "0 frozen" is information too
    heads = _headers(frozen_column) + (["arithmetic"] if explain else [])
    out = [f"**{title(trace)}**", "", layout_line(trace), "",
           "| " + " | ".join(heads) + " |",
           "|" + "|".join("---:" if i in (0, 1) or 5 <= i < len(_headers(frozen_column))
                          else "---" for i in range(len(heads))) + "|"]
    for row in trace.rows:
        values = cells(trace, row, frozen_column)
        values[2] = "&nbsp;&nbsp;" * row.depth + f"`{values[2].strip()}`"
        if explain:
            values.append("<br>".join(row.explain))
        out.append("| " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    out.append("")
    if trace.failure is not None:
        f = trace.failure
        out.append(f"**✗ failed at row {f.row}**: `{f.layer}`"
                   + (f", expected `{f.expected}`" if f.expected else "")
                   + (f", received `{f.received}`" if f.received else ""))
        out.append("")
        out.append("```text\n" + f.error + "\n```")
        out += [f"- **fix**: {fix}" for fix in f.fix]
        out.append("")
    out += [f"- {line}" for line in totals_lines(trace)]
    return "\n".join(out) + "\n"


def render(trace, format="text", explain=False):
    if format == "text":
        return text(trace, explain)
    if format == "markdown":
        return markdown(trace, explain)
    if format == "json":
        return json.dumps(trace.to_dict(), ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {format!r}: text, markdown or json")
