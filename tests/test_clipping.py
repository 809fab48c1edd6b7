"""Clipping against torch.nn.utils (the reference) and against the Keras formula."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from seqbench.clipping import CLIP, build_clipper, global_norm


def cfg(method, **kw):
    return OmegaConf.structured(CLIP.get(method).schema(**kw))


def clipper(c):
    """A built clip method called as the trainer calls it (the params are not used by
    these methods; the gradients are clipped in place)."""
    fn = build_clipper(c)
    return lambda grads, pre: fn([torch.zeros_like(g) for g in grads], grads, pre)


def random_grads(seed, scale=1.0, shapes=((3, 4), (7,), (2, 3, 5))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) * scale for s in shapes]


def params_with(grads, frozen=0):
    """Parameters carrying `grads`, plus `frozen` parameters that have no gradient."""
    ps = []
    for t in grads:
        p = torch.nn.Parameter(torch.zeros_like(t))
        p.grad = t.clone()
        ps.append(p)
    for _ in range(frozen):
        ps.append(torch.nn.Parameter(torch.full((4,), 1e6), requires_grad=False))
    return ps


def l2(ts):
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in ts))


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("c", [0.1, 1.0])
def test_value_equals_torch(scale, c):
    grads = random_grads(0, scale)
    ref = params_with(grads, frozen=1)
    torch.nn.utils.clip_grad_value_(ref, c)
    ours = [t.clone() for t in grads]
    pre = global_norm(ours)
    post, changed = clipper(cfg("value", clip_value=c))(ours, pre)
    for a, p in zip(ours, ref[:-1]):
        torch.testing.assert_close(a, p.grad, rtol=0, atol=0)
    assert float(pre) == pytest.approx(l2(grads), rel=1e-6)
    assert float(post) == pytest.approx(l2(ours), rel=1e-6)
    assert bool(changed) == any(bool((t.abs() > c).any()) for t in grads)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("scale", [0.001, 1.0, 50.0])
def test_global_norm_equals_torch(norm_type, scale):
    grads = random_grads(1, scale)
    ref = params_with(grads, frozen=2)  # frozen params: no grad, must not enter the norm
    total_ref = torch.nn.utils.clip_grad_norm_(ref, max_norm=1.0, norm_type=norm_type)
    ours = [t.clone() for t in grads]
    pre = global_norm(ours)
    post, changed = clipper(cfg("norm", max_norm=1.0, norm_type=norm_type))(ours, pre)
    for a, p in zip(ours, ref[:2]):
        torch.testing.assert_close(a, p.grad)
    assert float(global_norm(grads, norm_type)) == pytest.approx(float(total_ref), rel=1e-6)
    assert float(pre) == pytest.approx(l2(grads), rel=1e-6)  # pre is always global L2
    assert float(post) == pytest.approx(l2(ours), rel=1e-5)
    assert bool(changed) == (float(total_ref) + 1e-6 > 1.0)


def test_per_tensor_is_keras_clipnorm():
    grads = random_grads(2, 3.0)
    c = 2.0
    expected = []
    for t in grads:  # tf.clip_by_norm: t * c / max(||t||_2, c)
        a = t.double().numpy()
        expected.append(a * c / max(np.linalg.norm(a.ravel()), c))
    ours = [t.clone() for t in grads]
    post, changed = clipper(cfg("norm", max_norm=c, scope="per_tensor"))(
        ours, global_norm(ours)
    )
    for a, e in zip(ours, expected):
        np.testing.assert_allclose(a.double().numpy(), e, rtol=1e-6)
    assert bool(changed) == any(float(t.norm()) > c for t in grads)
    assert float(post) == pytest.approx(l2(ours), rel=1e-6)


def test_none_leaves_gradients_alone():
    grads = random_grads(3, 100.0)
    ours = [t.clone() for t in grads]
    pre = global_norm(ours)
    post, changed = clipper(cfg("none"))(ours, pre)
    for a, b in zip(ours, grads):
        assert torch.equal(a, b)
    assert float(post) == float(pre) and not bool(changed)


def test_nonfinite_gradient_propagates_not_crashes():
    grads = random_grads(4)
    grads[1][0] = float("nan")
    pre = global_norm(grads)
    post, _ = clipper(cfg("norm", max_norm=1.0))(grads, pre)
    assert not math.isfinite(float(pre)) and not math.isfinite(float(post))


grad_lists = st.integers(0, 10_000).flatmap(
    lambda seed: st.floats(1e-4, 1e4).map(lambda scale: random_grads(seed, scale))
)


@settings(max_examples=60, deadline=None)
@given(grads=grad_lists, max_norm=st.floats(1e-3, 1e3))
def test_norm_properties(grads, max_norm):
    ours = [t.clone() for t in grads]
    pre = global_norm(ours)
    post, changed = clipper(cfg("norm", max_norm=max_norm))(ours, pre)
    assert l2(ours) <= max_norm * (1 + 1e-6) or not bool(changed)
    assert l2(ours) <= max(max_norm, float(pre)) * (1 + 1e-5)
    # direction is unchanged: one positive scale factor for every element
    flat_in = torch.cat([t.flatten() for t in grads]).double()
    flat_out = torch.cat([t.flatten() for t in ours]).double()
    k = float(flat_out.norm() / flat_in.norm())
    torch.testing.assert_close(flat_out, flat_in * k, rtol=1e-5, atol=1e-12)
    if float(pre) + 1e-6 <= max_norm:  # identity below the threshold
        for a, b in zip(ours, grads):
            assert torch.equal(a, b)


@settings(max_examples=60, deadline=None)
@given(grads=grad_lists, c=st.floats(1e-3, 1e3))
def test_value_properties(grads, c):
    ours = [t.clone() for t in grads]
    clipper(cfg("value", clip_value=c))(ours, global_norm(ours))
    c32 = float(torch.tensor(c, dtype=torch.float32))  # the bound as the gradients store it
    for a, b in zip(ours, grads):
        assert float(a.abs().max()) <= c32
        inside = b.abs() <= c
        assert torch.equal(a[inside], b[inside])  # untouched inside [-c, c]
        assert torch.equal(torch.sign(a), torch.sign(b))
