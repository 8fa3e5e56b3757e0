"""performer-pytorch's `Performer` block stack in the peer workload.

Runs in benchmarks/peers/.venvs/performer_pytorch (performer-pytorch 1.1.4,
torch CPU build). Settings: `eager` (the documented default), `compile`
(torch.compile, inductor) and `bf16` (torch.autocast to bfloat16: only worth
running where the CPU has native bf16 matmuls, which the orchestrator checks).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload  # noqa: E402

SETTINGS = ("eager", "compile", "bf16")


def build_model(torch, Performer):
    w = workload.WORKLOAD
    dim, pixels = w["dim"], w["image_size"] ** 2

    class Classifier(torch.nn.Module):
        """Pixels as tokens, learned absolute positions, class token first, linear head on it."""

        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Linear(w["channels"], dim)
            self.positions = torch.nn.Parameter(0.02 * torch.randn(pixels, dim))
            self.class_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
            self.blocks = Performer(
                dim=dim,
                depth=w["depth"],
                heads=w["heads"],
                dim_head=dim // w["heads"],
                ff_mult=w["ff_multiplier"],
                nb_features=w["nb_features"],
                feature_redraw_interval=w["feature_redraw_interval"],
            )
            self.head = torch.nn.Linear(dim, w["num_classes"])

        def forward(self, images):  # [b, H, W, C]
            x = (
                self.embedding(images.reshape(images.shape[0], pixels, w["channels"]))
                + self.positions
            )
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
            return self.head(self.blocks(x)[:, 0])

    return Classifier()


def main():
    mode, setting = workload.parse_args(SETTINGS)
    import importlib.metadata

    import torch
    from performer_pytorch import Performer

    torch.set_num_threads(workload.THREADS["intra_op"])
    torch.set_num_interop_threads(workload.THREADS["inter_op"])
    torch.manual_seed(0)
    model = build_model(torch, Performer)
    images, labels = (torch.from_numpy(a) for a in workload.batch(mode))
    forward = torch.compile(model) if setting == "compile" else model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting == "bf16")
    if mode == "train":
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=workload.WORKLOAD["learning_rate"])

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(forward(images), labels)
            loss.backward()
            optimizer.step()
            loss.item()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                forward(images).float().sum().item()

    seconds, windows = workload.seconds_per_step(step)
    performer = importlib.metadata.version("performer-pytorch")
    version = f"performer-pytorch {performer}, torch {torch.__version__}"
    workload.report("performer-pytorch", version, mode, setting, seconds, windows)


if __name__ == "__main__":
    main()
