"""The elementwise AdamW used on CPU equals Paddle's fused kernel and keeps its state layout."""
import numpy as np
import paddle

from paddlellm.training.adamw import ElementwiseAdamW


def _train(cls, steps=6, **kwargs):
    paddle.seed(0)
    layer = paddle.nn.Linear(24, 16)
    opt = cls(learning_rate=1e-2, parameters=layer.parameters(), weight_decay=0.1,
              apply_decay_param_fun=lambda name: name.endswith("w_0"),
              grad_clip=paddle.nn.ClipGradByGlobalNorm(0.5), **kwargs)
    x = paddle.randn([8, 24])
    for _ in range(steps):
        (layer(x) ** 2).mean().backward()
        opt.step()
        opt.clear_grad()
    return layer, opt


def test_matches_fused_adamw_and_state_keys():
    fused, fused_opt = _train(paddle.optimizer.AdamW)
    ours, ours_opt = _train(ElementwiseAdamW)
    for a, b in zip(fused.parameters(), ours.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-6)
    def by_suffix(opt):  # accumulator names carry the layer's generated name (linear_N.)
        return {k.split(".", 1)[1]: v for k, v in opt.state_dict().items() if hasattr(v, "numpy")}

    fused_state, ours_state = by_suffix(fused_opt), by_suffix(ours_opt)
    assert sorted(fused_state) == sorted(ours_state) and len(fused_state) == 8
    for key, value in fused_state.items():
        np.testing.assert_allclose(value.numpy(), ours_state[key].numpy(), rtol=1e-5, atol=1e-7)


def test_lr_ratio_scales_the_update_per_parameter():
    base, _ = _train(ElementwiseAdamW, steps=1)
    doubled, _ = _train(ElementwiseAdamW, steps=1,
                        lr_ratio=lambda p: 2.0 if p.name.endswith("b_0") else 1.0)
    paddle.seed(0)
    start = paddle.nn.Linear(24, 16)
    step_base = base.bias.numpy() - start.bias.numpy()
    step_doubled = doubled.bias.numpy() - start.bias.numpy()
    np.testing.assert_allclose(step_doubled, 2 * step_base, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(base.weight.numpy(), doubled.weight.numpy())
