#!/usr/bin/env python3
"""Reference renderings of chat templates with Python jinja2, as HF transformers' apply_chat_template does.

Usage: chat_template_ref.py IN.json OUT.json

IN.json: a list of {"template", "messages": [{"role", "content"}], "add_generation_prompt", "bos_token",
"eos_token"}. OUT.json: a list of {"ok": rendered text} or {"error": message}, in the same order.
The environment is transformers' (`utils/chat_template_utils.py`, `_compile_jinja_template`): sandboxed,
trim_blocks, lstrip_blocks, loopcontrols, `raise_exception`, `tojson`.
"""
import json
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    with open(sys.argv[1], encoding="utf-8") as fh:
        cases = json.load(fh)
    out = []
    for c in cases:
        try:
            text = env.from_string(c["template"]).render(
                messages=c["messages"], add_generation_prompt=c["add_generation_prompt"],
                bos_token=c["bos_token"], eos_token=c["eos_token"])
            out.append({"ok": text})
        except jinja2.exceptions.TemplateError as e:
            out.append({"error": str(e)})
    with open(sys.argv[2], "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False)


if __name__ == "__main__":
    main()
