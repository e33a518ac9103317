"""Just enough PromQL to check dashboards and alert rules: the series selectors an expression reads, and the
measured part of an alert expression shaped `<measured> <comparison> <number>`.

Not a parser: a scanner that knows strings, brackets, label matchers, and the keywords whose parentheses hold
label names (`by (job)`), which is all that finding selectors and a top-level comparison needs.

>>> selectors('sum by (job) (rate(checkpoints_total{result="failed"}[5m])) / sum(up)')
['checkpoints_total{result="failed"}', 'up']
>>> selectors('max by (job, chain) (label_replace(busy_ratio{job=~".+"}, "chain", "$1", "task", "(.+)#[0-9]+"))')
['busy_ratio{job=~".+"}']
>>> measured_part('(sum(jobmanager_is_leader) or vector(0)) < 1')
'(sum(jobmanager_is_leader) or vector(0))'
>>> measured_part('up{component="taskmanager"} == 0')
'up{component="taskmanager"}'
>>> measured_part('sum(x{a!="b"}) / sum(y)') is None
True
"""
import re

# Words that are not metric names. The grouping ones are followed by a parenthesised list of label names; an
# aggregation may be followed by one (`sum by (job) (...)`) before its argument.
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile", "limitk", "limit_ratio"}
KEYWORDS = GROUPING | AGGREGATIONS | {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|[+-]?(inf|nan)$", re.IGNORECASE)
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
CLOSING = {"(": ")", "{": "}", "[": "]"}


def _skip_string(text, i):
    """The index after the string literal that starts at text[i]."""
    quote = text[i]
    i += 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" and quote != "`" else 1
    return i + 1


def _skip_group(text, i):
    """The index after the bracketed group that opens at text[i] (strings inside are skipped)."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            i = _skip_string(text, i)
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced brackets in {text!r}")


def _next_char(text, i):
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def selectors(expr):
    """Every series selector of `expr`, as written (`name{matchers}`, `name`, or `{matchers}`), in order."""
    found = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "[":
            i = _skip_group(expr, i)  # a range or a subquery's duration
        elif c == "{":
            end = _skip_group(expr, i)
            found.append(expr[i:end])  # a selector without a metric name
            i = end
        elif c.isdigit() or (c == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            i += 1
            while i < len(expr) and (expr[i].isalnum() or expr[i] in "._"):
                i += 1  # a number, or a duration after `offset`
        elif IDENTIFIER.match(expr, i):
            word = IDENTIFIER.match(expr, i).group(0)
            after = _next_char(expr, i + len(word))
            if word in GROUPING and after < len(expr) and expr[after] == "(":
                i = _skip_group(expr, after)  # label names, not metrics
            elif word in KEYWORDS or (after < len(expr) and expr[after] == "("):
                i += len(word)  # a keyword, or a function or aggregation whose arguments come next
            elif after < len(expr) and expr[after] == "{":
                end = _skip_group(expr, after)
                found.append(word + expr[after:end])
                i = end
            else:
                found.append(word)
                i += len(word)
        else:
            i += 1
    return found


def measured_part(expr):
    """`expr` without its top-level trailing comparison with a number (`A > 0.5` gives `A`), or None when
    `expr` has no such shape."""
    depth = 0
    last = None
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0:
            for op in COMPARISONS:
                if expr.startswith(op, i):
                    last = (i, i + len(op))
                    i += len(op) - 1
                    break
        i += 1
    if last is None:
        return None
    right = expr[last[1]:].strip()
    if right.startswith("bool "):
        right = right[len("bool "):].strip()
    if not NUMBER.match(right):
        return None
    return expr[: last[0]].strip()


if __name__ == "__main__":
    import doctest

    raise SystemExit(doctest.testmod().failed)
