"""Chat-template Jinja semantics against renders recorded from ``transformers`` (tojson options,
loop controls, namespaces, trim/lstrip blocks, generation blocks, None-key dropping, reasoning
aliases, continue_final_message, documents, raise_exception and the sandbox)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import pytest

from paddlellm.tokenizer import AutoTokenizer, render_chat_template

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
CASES = json.loads((FIXTURES / "chat_semantics.json").read_text(encoding="utf-8"))
ERRORS = {"TemplateError": jinja2.TemplateError, "SecurityError": jinja2.exceptions.SecurityError,
          "ValueError": ValueError}


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(FIXTURES / "qwen2")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_semantics_match_transformers(tok, case):
    kwargs = dict(case["kwargs"])
    if "error" in case:
        with pytest.raises(ERRORS[case["error"]["type"]], match=re.escape(case["error"]["message"])):
            tok.apply_chat_template(case["conversation"], tokenize=False, chat_template=case["template"], **kwargs)
        return
    out = tok.apply_chat_template(case["conversation"], tokenize=False, chat_template=case["template"], **kwargs)
    assert out == case["text"]


def test_caller_messages_are_not_modified(tok):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "par", "reasoning": "r"}]
    snapshot = json.loads(json.dumps(messages))
    tok.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    assert messages == snapshot


def test_strftime_now_and_rich_values():
    import numpy as np

    text = render_chat_template("{{ strftime_now('%Y') }}|{{ n }}|{{ arr }}", [[{"role": "user", "content": "x"}]],
                                n=np.int64(3), arr=np.zeros(2))[0]
    year, n, arr = text.split("|")
    assert len(year) == 4 and year.isdigit()
    assert n == "3" and arr == "<ndarray>"  # rich objects never reach the sandbox


def test_invalid_tools_and_documents(tok):
    with pytest.raises(ValueError, match="JSON-schema dicts"):
        tok.apply_chat_template([{"role": "user", "content": "x"}], tools=["not a schema"], tokenize=False)
    with pytest.raises(TypeError, match="list of dicts"):
        tok.apply_chat_template([{"role": "user", "content": "x"}], documents=["doc"], tokenize=False)


MASK_CASES = json.loads((FIXTURES / "assistant_masks.json").read_text(encoding="utf-8"))
GENERATION_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}{% if m.role == 'assistant' %}"
    "{% generation %}{{ m.content + '<|im_end|>' }}{% endgeneration %}{% else %}{{ m.content + '<|im_end|>' }}"
    "{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize("case", MASK_CASES, ids=[f"{c['tokenizer']}-{len(c['kwargs'])}" for c in MASK_CASES])
def test_assistant_tokens_mask_matches_transformers(case):
    tok = AutoTokenizer.from_pretrained(FIXTURES / case["tokenizer"])
    out = tok.apply_chat_template(case["conversation"], chat_template=GENERATION_TEMPLATE, return_dict=True,
                                  return_assistant_tokens_mask=True, **case["kwargs"])
    assert out["input_ids"] == case["input_ids"]
    assert out["assistant_masks"] == case["assistant_masks"]
    with pytest.raises(ValueError, match="requires return_dict=True"):
        tok.apply_chat_template(case["conversation"], chat_template=GENERATION_TEMPLATE,
                                return_assistant_tokens_mask=True)
