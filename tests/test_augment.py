"""akt_lib.augment against torchvision's per-image transforms and brute force."""

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from akt_lib.augment import crop_flip, draw_crop_flip_params, random_crop_flip


def _oracle(x, top, left, flip, padding):
    """torchvision, one image at a time: pad(fill=0) → crop → hflip."""
    h, w = x.shape[-2:]
    out = []
    for i in range(x.shape[0]):
        img = TF.pad(x[i], [padding], fill=0)
        img = TF.crop(img, int(top[i]), int(left[i]), h, w)
        out.append(TF.horizontal_flip(img) if flip[i] else img)
    return torch.stack(out)


def _brute(x, top, left, flip, padding):
    """By hand: a zero canvas, the image pasted in the middle, a slice, a reversed column order."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        canvas = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=x.dtype)
        canvas[:, padding:padding + h, padding:padding + w] = x[i]
        win = canvas[:, int(top[i]):int(top[i]) + h, int(left[i]):int(left[i]) + w]
        out[i] = win[:, :, list(range(w - 1, -1, -1))] if flip[i] else win
    return out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("padding", [0, 1, 4])
def test_crop_flip_matches_torchvision_and_brute_force(dtype, padding):
    g = torch.Generator().manual_seed(padding)
    x = torch.randint(0, 256, (40, 3, 32, 32), generator=g).to(dtype)
    top, left, flip = draw_crop_flip_params(40, padding, generator=g)
    # Make sure the extreme offsets and both flips are exercised, not left to chance.
    top[:4] = torch.tensor([0, 2 * padding, 0, 2 * padding])
    left[:4] = torch.tensor([0, 0, 2 * padding, 2 * padding])
    flip[:2] = torch.tensor([True, False])
    got = crop_flip(x, top, left, flip, padding)
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got, _oracle(x, top, left, flip, padding), rtol=0, atol=0)
    torch.testing.assert_close(got, _brute(x, top, left, flip, padding), rtol=0, atol=0)


def test_non_square_images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 2, 5, 9, generator=g)
    top, left, flip = draw_crop_flip_params(6, 3, generator=g)
    torch.testing.assert_close(crop_flip(x, top, left, flip, 3), _brute(x, top, left, flip, 3), rtol=0, atol=0)


def test_centre_window_is_identity_and_flip_mirrors():
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    four = torch.full((3,), 4, dtype=torch.long)
    assert torch.equal(crop_flip(x, four, four, torch.zeros(3, dtype=torch.bool)), x)
    assert torch.equal(crop_flip(x, four, four, torch.ones(3, dtype=torch.bool)), x.flip(-1))


def test_random_crop_flip_equals_crop_flip_with_drawn_params():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    got = random_crop_flip(x, 4, generator=torch.Generator().manual_seed(7))
    params = draw_crop_flip_params(16, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(got, crop_flip(x, *params, padding=4))
    # Same seed, same batch; another seed, another batch.
    assert torch.equal(got, random_crop_flip(x, 4, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(got, random_crop_flip(x, 4, generator=torch.Generator().manual_seed(8)))


def test_offsets_recovered_from_output_cover_0_to_8_and_flip_is_fair():
    # Encode each pixel's position: channel 0 = row + 1, channel 1 = column + 1 (0 = padding).
    n = 3000
    rows = torch.arange(1, 33, dtype=torch.uint8).view(32, 1).expand(32, 32)
    cols = torch.arange(1, 33, dtype=torch.uint8).view(1, 32).expand(32, 32)
    x = torch.stack([rows, cols, torch.zeros_like(rows)]).expand(n, 3, 32, 32).contiguous()
    out = random_crop_flip(x, 4, generator=torch.Generator().manual_seed(0)).long()
    # Output pixel (16, 16) always lies inside the image; padded row = 16 + top, image row = that - 4.
    top = out[:, 0, 16, 16] - 1 - 16 + 4
    flipped = out[:, 1, 16, 17] < out[:, 1, 16, 16]
    col = out[:, 1, 16, 16] - 1 + 4  # padded column read by output column 16
    left = torch.where(flipped, col - (31 - 16), col - 16)
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=9)
        assert counts.numel() == 9  # nothing outside 0..8
        # Uniform on 9 values: expected 333 each; ±25 % is > 5 standard deviations.
        assert counts.min() > 250 and counts.max() < 417, counts
    assert abs(flipped.float().mean().item() - 0.5) < 0.05
    # And the output agrees with the brute-force oracle at the recovered parameters.
    k = 300
    assert torch.equal(out[:k].to(torch.uint8), _brute(x[:k], top[:k], left[:k], flipped[:k], 4))


def test_empty_batch():
    x = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    assert random_crop_flip(x).shape == (0, 3, 32, 32)


def test_bad_inputs():
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="batch"):
        random_crop_flip(x[0])
    with pytest.raises(TypeError, match="uint8 or floating"):
        random_crop_flip(x.long())
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(x, padding=-1)
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(x, padding=2.5)
    z, f = torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="top"):
        crop_flip(x, z[:1], z, f)
    with pytest.raises(ValueError, match=r"0\.\.8"):
        crop_flip(x, z + 9, z, f)
    with pytest.raises(ValueError, match=r"0\.\.8"):
        crop_flip(x, z, z - 1, f)
    with pytest.raises(TypeError, match="bool"):
        crop_flip(x, z, z, f.long())
    with pytest.raises(ValueError, match="n must"):
        draw_crop_flip_params(-1)
