r"""PixelCNN: an autoregressive model of binary images made of masked convolutions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.distributions import Bernoulli
from torch import Tensor, nn
from torch.nn import functional as F

from ppdgm._checks import check_int
from ppdgm.autoregressive import Autoregressive, Chain
from ppdgm.base import register_model
from ppdgm.settings import from_data, setting, sizes

__all__ = ["MaskedConv2d", "PixelCNN", "image_shape"]


def _size(text: str) -> int:
    """A command line's positive integer (a size that may also be left to the data)."""
    return sizes(text, count=1)[0]


def image_shape(dim: int | None, height: int | None, width: int | None) -> tuple[int, int]:
    """``(height, width)`` of images of ``dim`` pixels: the sizes given, the one missing from
    ``dim``, or the side of a square ``dim``.

    Raises:
        ValueError: for a ``dim`` that is not a square when neither size is given, or sizes
            whose product is not ``dim``.

    Example:
        >>> image_shape(784, None, None), image_shape(6, 2, None), image_shape(None, 2, 3)
        ((28, 28), (2, 3), (2, 3))
        >>> image_shape(10, None, None)
        Traceback (most recent call last):
        ...
        ValueError: PixelCNN models square images unless told their size, but dim = 10 is not a square; pass height and width (--height, --width) with height * width = 10
    """  # noqa: E501
    for name, value in (("dim", dim), ("height", height), ("width", width)):
        if value is not None:
            check_int(name, value)
    if height is None and width is None:
        if dim is None:
            raise ValueError("PixelCNN needs the image's size: pass height and width, or dim")
        side = math.isqrt(dim)
        if side * side != dim:
            raise ValueError(
                f"PixelCNN models square images unless told their size, but dim = {dim} is not "
                "a square; pass height and width (--height, --width) with height * width = "
                f"{dim}"
            )
        return side, side
    if height is None or width is None:
        known = height if height is not None else width
        assert known is not None
        if dim is None or dim % known:
            raise ValueError(
                f"PixelCNN cannot tell the image's {'width' if width is None else 'height'} "
                f"from dim = {dim} and {'height' if width is None else 'width'} = {known}; "
                "pass both height and width"
            )
        other = dim // known
        return (known, other) if width is None else (other, known)
    if dim is not None and height * width != dim:
        raise ValueError(
            f"PixelCNN's images of height {height} and width {width} have {height * width} "
            f"pixels, but the data have dim = {dim}"
        )
    return height, width


class MaskedConv2d(nn.Conv2d):
    """A same-size convolution whose kernel sees only the pixels before the centre in raster
    order (the rows above, and the pixels to the left in the centre's row): the centre too for
    ``mask_type="B"``, not for ``"A"``.

    With one colour channel, A on the image and B on every feature map after it make output
    pixel ``i`` depend on input pixels ``j < i`` alone.

    Example:
        >>> MaskedConv2d(1, 1, 3, "A").mask[0, 0]
        tensor([[1., 1., 1.],
                [1., 0., 0.],
                [0., 0., 0.]])
    """

    mask: Tensor

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        centre = kernel_size // 2
        mask = torch.ones_like(self.weight)
        mask[:, :, centre, centre + (mask_type == "B") :] = 0
        mask[:, :, centre + 1 :] = 0
        self.mask_type = mask_type
        # rebuilt from the settings, so not saved
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    @property
    def num_parameters(self) -> int:
        """Weights the mask lets through, plus the biases."""
        return int(self.mask.sum()) + (self.out_channels if self.bias is not None else 0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_type={self.mask_type!r}"


@register_model("pixelcnn")
class PixelCNN(Autoregressive):
    r"""PixelCNN over binary images of ``height x width`` pixels (van den Oord et al., 2016).

    The pixels are taken in raster order (row by row, left to right) and

    .. math::

        p(x) = \prod_{i=1}^{HW} p(x_i \mid x_{<i}), \qquad
        p(x_i = 1 \mid x_{<i}) = \sigma(f_i(x)),

    where ``f`` is a stack of masked convolutions: a type-A mask on the first (the centre pixel
    excluded), type B on the ``layers - 1`` after it (the centre of the feature maps included),
    ReLU between, and a 1x1 convolution to one logit per pixel. Logit ``i`` depends only on
    pixels before ``i``, so ``log_prob`` is exact and takes one pass; ``sample`` draws the pixels
    one at a time (``HW`` passes). The stacked masks leave a blind spot: some earlier pixels up
    and to the right never reach a pixel's logit, whatever the depth.

    Data are flat rows ``[N, height * width]`` like the other zoo models' (reshaped inside to
    ``[N, 1, height, width]``); the size comes from ``dim`` when the images are square.

    Arguments:
        height: the image's rows (None: from ``dim``).
        width: the image's columns (None: from ``dim``).
        dim: the pixels per image, ``height * width`` (None: from the sizes).
        channels: the feature maps of every hidden layer.
        layers: the masked convolutions (one type A, then type B).
        kernel_size: the (odd) side of every masked kernel.

    Example:
        >>> model = PixelCNN(3, 3, channels=8, layers=3, kernel_size=3)
        >>> x = torch.bernoulli(torch.full((2, 9), 0.5))
        >>> model.log_prob(x).shape, model.sample(5, seed=0).shape
        (torch.Size([2]), torch.Size([5, 9]))
        >>> PixelCNN(dim=784).settings.height  # 28 x 28, from the data's size
        28

    References:
        van den Oord, A., Kalchbrenner, N. and Kavukcuoglu, K. (2016). Pixel recurrent neural
        networks. ICML.
    """

    _formula = "unmasked weights + biases"

    @dataclass(frozen=True)
    class Config:
        """PixelCNN's settings (see the class); the size comes from the data when square."""

        height: int | None = setting(None, "image rows (none: square, from the data)", parse=_size)
        width: int | None = setting(
            None, "image columns (none: square, from the data)", parse=_size
        )
        dim: int = from_data()
        channels: int = setting(64, "feature maps of each hidden layer")
        layers: int = setting(7, "masked convolutions (one type A, then type B)")
        kernel_size: int = setting(5, "side of each masked kernel (odd)", flag="--kernel")

    def __init__(
        self,
        height: int | None = None,
        width: int | None = None,
        *,
        dim: int | None = None,
        channels: int = 64,
        layers: int = 7,
        kernel_size: int = 5,
    ) -> None:
        height, width = image_shape(dim, height, width)
        check_int("channels", channels)
        check_int("layers", layers)
        check_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centre pixel), got {kernel_size}")
        super().__init__(height * width)
        self._record(
            dim=height * width,
            height=height,
            width=width,
            channels=channels,
            layers=layers,
            kernel_size=kernel_size,
        )
        self.height, self.width = height, width
        self.convs = nn.ModuleList(
            MaskedConv2d(1 if i == 0 else channels, channels, kernel_size, "A" if i == 0 else "B")
            for i in range(layers)
        )
        self.out = nn.Conv2d(channels, 1, 1)

    @property
    def num_parameters(self) -> int:
        out = self.out.weight.numel() + self.out.out_channels
        return sum(conv.num_parameters for conv in self.convs) + out

    def _grid_logits(self, images: Tensor) -> Tensor:
        """``[B, rows, width]`` logits of ``[B, 1, rows, width]`` images (the top ``rows``)."""
        h = images
        for i, conv in enumerate(self.convs):
            h = conv(h if i == 0 else F.relu(h))
        return self.out(F.relu(h))[:, 0]

    def logits(self, x: Tensor) -> Tensor:
        """``[..., dim]`` logits: entry ``i`` is that of ``p(x_i = 1 | x_<i)``, in one pass."""
        batch = x.shape[:-1]
        images = x.reshape(-1, 1, self.height, self.width)
        return self._grid_logits(images).reshape(*batch, self.dim)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of each row of binary ``[N, dim]`` data, exactly: ``[N]``."""
        x = self.check(x)
        return -F.binary_cross_entropy_with_logits(self.logits(x), x, reduction="none").sum(-1)

    def _conditionals(self, shape: tuple[int, ...]) -> Chain:
        """Pixel by pixel in raster order: each step's logit from the image drawn so far, the
        rows above and the current row (the masks see nothing below)."""
        x = torch.zeros(*shape, self.dim, dtype=self.dtype, device=self.order.device)
        pixels = torch.arange(self.dim, device=x.device)
        for i in range(self.dim):
            rows = i // self.width + 1
            top = x[..., : rows * self.width]
            images = top.reshape(-1, 1, rows, self.width)
            logit = self._grid_logits(images).reshape(*top.shape[:-1], -1)[..., i]
            value = yield Bernoulli(logits=logit)
            x = torch.where(pixels == i, value[..., None].to(x.dtype), x)
