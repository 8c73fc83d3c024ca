"""mergekit's parameter semantics: scalars, gradients over layers, filters, precedence."""
from __future__ import annotations

import pytest

from paddlellm_merge import MergeError
from paddlellm_merge.params import (ParamSpec, evaluate_setting, layer_index, layer_t, resolve,
                                    resolve_all)

F = ParamSpec("density", float, "non_base", 1.0)


def ev(setting, name="model.layers.0.mlp.up_proj.weight", t=0.0, spec=F):
    return evaluate_setting(name, setting, t, spec.validate)


def test_layer_position():
    assert layer_index("model.layers.11.self_attn.q_proj.weight") == 11
    assert layer_index("transformer.h.3.attn.c_attn.weight") == 3
    assert layer_index("model.embed_tokens.weight") is None
    assert layer_t("model.layers.2.mlp.up_proj.weight", 5) == 0.5
    assert layer_t("lm_head.weight", 5) == 0.0
    assert layer_t("model.layers.0.mlp.up_proj.weight", 1) == 1.0


def test_gradient_interpolates_between_anchors():
    g = [0.0, 1.0, 0.5]
    assert ev(g, t=0.0) == 0.0
    assert ev(g, t=0.25) == pytest.approx(0.5)
    assert ev(g, t=0.5) == pytest.approx(1.0)
    assert ev(g, t=0.75) == pytest.approx(0.75)
    assert ev(g, t=1.0) == pytest.approx(0.5)
    boolean = ParamSpec("normalize", bool)
    assert ev([True, False], t=0.4, spec=boolean) is True  # discrete: values[int(t*(n-1))]
    assert ev([True, False], t=1.0, spec=boolean) is False


def test_filters_first_match_wins_and_fallthrough():
    setting = [{"filter": "self_attn", "value": 0.1}, {"filter": "mlp", "value": [0.2, 0.4]},
               {"value": 0.9}]
    assert ev(setting, "model.layers.1.self_attn.k_proj.weight") == 0.1
    assert ev(setting, "model.layers.1.mlp.down_proj.weight", t=0.5) == pytest.approx(0.3)
    assert ev(setting, "model.norm.weight") == 0.9
    assert ev([{"filter": "mlp", "value": 1}], "model.norm.weight") is None


def test_precedence_defaults_and_required():
    w = ParamSpec("weight", float, "non_base")
    assert resolve(F, [{"density": 0.3}, {"density": 0.7}], "x", 0) == 0.3
    assert resolve(F, [None, {"density": 0.7}], "x", 0) == 0.7
    assert resolve(F, [None, None], "x", 0) == 1.0
    with pytest.raises(MergeError, match="missing required parameter 'weight' for m2.x"):
        resolve(w, [None, None], "x", 0, where="m2")
    out = resolve_all([w, F, ParamSpec("lambda", float, "shared", 1.0)], tensor_name="x", t=0,
                      global_params={"lambda": 2, "density": 0.5},
                      model_params=[None, {"weight": 1}, {"weight": 2, "density": 0.1}],
                      model_names=["base", "a", "b"], is_base=[True, False, False])
    assert out == {"weight": [1.0, 2.0], "density": [0.5, 0.1], "lambda": 2.0}


def test_bad_values_are_errors():
    with pytest.raises(MergeError, match="parameter 'density': cannot read 'lots' as float"):
        ev("lots")
    with pytest.raises(MergeError, match="needs a 'value' key"):
        ev({"filter": "mlp"})


def test_paddlenlp_sparsify_type_pairs():
    """PaddleNLP's --merge_method + --sparsify_type select the combined method."""
    import pytest

    from paddlellm_merge.errors import MergeError
    from paddlellm_merge.spec import build_parser, spec_from_args

    def method(*flags):
        ns = build_parser().parse_args(["--output_path", "o", "--model_path_list", "a", "b",
                                        "--base_model_path", "base", *flags])
        return spec_from_args(ns).merge_method

    assert method("--merge_method", "linear", "--sparsify_type", "dare") == "dare_linear"
    assert method("--merge_method", "ties", "--sparsify_type", "dare") == "dare_ties"
    assert method("--merge_method", "ties", "--sparsify_type", "magprune") == "della"
    assert method("--sparsify_type", "magprune") == "della_linear"
    assert method("--merge_method", "ties", "--sparsify_type", "trim") == "ties"
    assert method("--merge_method", "slerp") == "slerp"
    with pytest.raises(MergeError, match="supported pairs"):
        method("--merge_method", "slerp", "--sparsify_type", "dare")
