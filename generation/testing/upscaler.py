"""A tiny random-weight ESRGAN upscaler that spandrel loads like a downloaded one."""

from __future__ import annotations

from pathlib import Path


def make_test_upscaler(path: str | Path, scale: int = 4, seed: int = 0) -> Path:
    """Write a tiny random-weight ESRGAN (the architecture of Real-ESRGAN, 16 filters, one
    block) to `path` as .safetensors, loadable by spandrel like a downloaded upscaler.

    Random weights alone turn every picture black, which would hide tiling mistakes; so
    the first three feature channels carry the picture through the main path (a nearest-
    neighbour enlargement) and the random trunk only adds a little texture on top. Seeded:
    the same file every time. `scale` 1 makes a model that is not an upscaler."""
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from ..postprocess.upscale import import_spandrel

    import_spandrel()  # spandrel's architectures import torchvision; see there
    from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet

    torch.manual_seed(seed)
    net = RRDBNet(num_filters=16, num_blocks=1, scale=scale)

    def convs(module: nn.Module) -> list[nn.Conv2d]:
        return [m for m in module.modules() if isinstance(m, nn.Conv2d)]

    trunk = convs(net.model[1])  # the residual trunk: feature map + trunk(feature map)
    main = [c for c in convs(net.model) if all(c is not t for t in trunk)]
    with torch.no_grad():
        for index, conv in enumerate(main):
            # Channels 0-2 pass R, G, B on (the centre tap of a 3×3 kernel); after the first
            # conv they also take 5 % of the random channels, so that the trunk shows.
            conv.weight[:3].mul_(0.0 if index == 0 else 0.05)
            conv.bias[:3].zero_()
            for channel in range(3):
                conv.weight[channel, channel, 1, 1] += 1
        trunk[-1].weight[:3].mul_(0.1)  # a small residual on the picture's own channels
        trunk[-1].bias[:3].mul_(0.1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path
