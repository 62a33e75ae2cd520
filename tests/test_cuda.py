"""The GPU's path (harness/cuda_graph.py: common.train_step recorded as a CUDA graph and replayed) trains as the loop
does: `make test` on a machine with CUDA runs it; without CUDA it is skipped. cuDNN may pick other algorithms for
the recorded and the eager kernels, which round differently, so the two runs agree to a tolerance, not to the bit."""
import pytest
import torch

import common
import model3
from harness import cli, cuda_graph

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

IMAGES, BATCH = 300, 64  # four full batches and a partial one of 44: both kinds of update in every epoch


def _train(mnist, graphed_path, epochs=2):
    config = cli.config_from_args(cli.build_parser("model3", model3.DEFAULTS, "").parse_args(
        ["--device", "cuda", "--epochs", str(epochs), "--batch-size", str(BATCH)]))
    torch.manual_seed(1)
    model = model3.Net().cuda()
    images, labels = mnist["train"]
    loader = common.DeviceLoader(images[:IMAGES], labels[:IMAGES], BATCH, "cuda", mnist["mean"], mnist["std"],
                                 shuffle=True, rotate_degrees=10, shift_pixels=2, seed=1)
    optimizer, scheduler, _ = common.make_optimizer_and_scheduler(model, config, len(loader))
    update = (cuda_graph.graphed(common.train_step, model, optimizer, loader, evaluate_test=lambda: None,
                                 spare_optimizer=common.make_optimizer_and_scheduler(model, config, 1)[0])
              if graphed_path else None)
    sums = [common.train_epoch(model, loader, optimizer, scheduler, update) for _ in range(epochs)]
    torch.cuda.synchronize()
    return model, sums, update


def test_the_graphed_update_trains_as_the_plain_loop(mnist):
    plain, plain_sums, _ = _train(mnist, graphed_path=False)
    fast, fast_sums, graphed = _train(mnist, graphed_path=True)
    assert graphed.graph is not None, "the graph was never recorded: every batch ran eagerly"
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values()):
        if a.is_floating_point():
            # after 10 updates at OneCycle's rates; kernels of other algorithms differ in their last bits
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), f"{name}: max diff {(a - b).abs().max().item():.2e}"
        else:
            assert torch.equal(a, b), name  # the batch-norm counters: one per update, both ways
    for (plain_loss, plain_acc), (fast_loss, fast_acc) in zip(plain_sums, fast_sums):
        assert fast_loss == pytest.approx(plain_loss, rel=1e-3)
        assert abs(fast_acc - plain_acc) <= 100 / IMAGES  # at most one image decided otherwise


def test_fit_on_cuda_goes_through_the_graph(mnist, monkeypatch):
    made = []
    real_graphed = cuda_graph.graphed
    monkeypatch.setattr(common.cuda_graph, "graphed", lambda *args, **kwargs: made.append(
        real_graphed(*args, **kwargs)) or made[-1])
    config = cli.config_from_args(cli.build_parser("model3", model3.DEFAULTS, "").parse_args(
        ["--device", "cuda", "--epochs", "1", "--subset", str(IMAGES), "--batch-size", str(BATCH)]))
    trained = common.fit(model3.Net, config, mnist, log=lambda *_: None)
    assert len(made) == 1 and made[0].graph is not None and trained.setup_seconds > 0
    assert trained.update == "train_step replayed as a CUDA graph"
