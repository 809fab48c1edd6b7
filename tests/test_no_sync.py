"""The training step reads no tensor value on the host between flushes.

On CUDA a host read (`.item()`, `bool(t)`, `float(t)`, `.tolist()`, `.cpu()`,
`.numpy()`) waits for the GPU; DESIGN.md forbids them in the per-step path. This CPU
test patches those methods, runs real steps, and counts the reads made from seqbench's
own code (torch's internals, e.g. the optimizer reading its CPU step counter, are not
ours to police here; the CUDA check with `torch.cuda.set_sync_debug_mode` is).
"""


import pytest
import torch

from seqbench.train import Trainer


@pytest.mark.parametrize("clip", [
    ["clip=none"], ["clip=value"], ["clip=norm"], ["clip=norm", "clip.norm_type=inf"],
    ["clip=norm", "clip.scope=per_tensor"],
    ["clip=norm", "clip.relative=true", "clip.calibration_steps=3"],
    ["clip=combined"], ["clip=graves"], ["clip=autoclip"], ["clip=agc"],
    ["clip=zclip", "clip.warmup_steps=2"],
])
def test_steps_between_flushes_make_no_host_reads(tiny_cfg, tmp_path, host_reads, clip):
    cfg = tiny_cfg(*clip, "trainer.accum_steps=2", "trainer.param_log_every=2")
    trainer = Trainer(cfg, tmp_path)
    for _ in range(cfg.trainer.log_every):  # one flush interval
        trainer.step()
    assert host_reads == []
    trainer.flush(1)  # the flush is where the one read happens
    assert any(r.startswith(("cpu", "numpy")) for r in host_reads)


def test_the_check_catches_a_host_read(tiny_cfg, tmp_path, host_reads):
    """on_nonfinite=skip decides on the host (documented): the spy must see that read."""
    trainer = Trainer(tiny_cfg("trainer.on_nonfinite=skip"), tmp_path)
    trainer.step()
    assert any(r.startswith("__bool__") for r in host_reads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("clip", ["none", "value", "norm", "autoclip", "zclip", "agc"])
def test_cuda_steps_between_flushes_make_no_sync(tiny_cfg, tmp_path, clip):
    """On CUDA, torch itself reports any synchronising call: mode "error" raises."""
    cfg = tiny_cfg(f"clip={clip}", "trainer.device=cuda", "trainer.param_log_every=2")
    trainer = Trainer(cfg, tmp_path)
    trainer.step()  # warm-up: lazy CUDA initialisation is not a per-step cost
    trainer.flush(1)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(cfg.trainer.log_every):
            trainer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.flush(2)
