"""AIT's gradient inundation (GI): inflate each layer's step until its integer weight codes move.

At lr 1e-4 a plain SGD step moves almost no 4-bit weight across a rounding boundary, so the
quantized network does not change at all. AIT (methods.md §3a) scales the step of every conv
and FC weight by a factor ``a >= 1`` chosen so that about ``threshold`` (0.1 %) of the layer's
integer codes change this step. BN parameters and biases get plain Nesterov SGD. AIT chapter.

The reference finds ``a`` with a Python loop (doubling, then 5 bisection rounds), reading
every trial fraction back to the host. Here each stage is one batched evaluation of all
candidates on the device and the bisection is replayed with tensor ops, so ``step()`` never
synchronises. ``select="bisection"`` (default) returns exactly the reference's ``a``;
``"closest"`` returns the candidate whose fraction is nearest the threshold.

Two things the measured fraction shows (tests/test_inundation.py): it moves in steps of one
code (a 640-weight FC cannot change 0.1 %), and when a channel's min/max moves far enough for
``round(s * lo)`` to flip, the zero point shifts and *every* code of that channel changes
although its values barely move; near-symmetric channels sit close to such a tie.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .quant import QuantConfig, QuantConv2d, QuantLinear, affine_params, check_bits, quantize_model
from .utils import check_int

__all__ = ["integer_codes", "code_change_fraction", "search_scale", "reference_search", "GradientInundationSGD",
           "inundation_param_groups", "threshold_at_epoch", "scale_cap_at_epoch", "inundation_demo"]

#: While the warm-up cap is on, the reference stops doubling once ``a > 100`` (so at ``a = 128``).
CAP_DOUBLINGS = 7
SELECTIONS = ("bisection", "closest")


def _row_codes(rows: torch.Tensor, num_bits: int) -> torch.Tensor:
    # (..., n) -> integer codes (..., n), range = each row's own min/max (methods.md §1.2). A min/max
    # needs no range check (which would read the values back: a host sync inside step()).
    s, z = affine_params(rows.amin(-1, keepdim=True), rows.amax(-1, keepdim=True), num_bits, check_range=False)
    half = 2 ** (num_bits - 1)
    return torch.clamp(torch.round(s * rows - z), -half, half - 1)


def integer_codes(w: torch.Tensor, num_bits: int) -> torch.Tensor:
    """Integer codes ``q`` of the per-output-channel min/max weight quantizer (§1.2).

    Args:
        w: weight ``(C_out, ...)``.
        num_bits: k, 1..8.

    Returns:
        Float tensor of integers in ``[-2^(k-1), 2^(k-1) - 1]``, same shape as ``w``.

    Examples:
        >>> integer_codes(torch.tensor([[-1.0, 0.0, 0.4, 2.0]]), 2)
        tensor([[-2., -1., -1.,  1.]])
    """
    check_bits(num_bits, "num_bits", range(1, 9))
    return _row_codes(w.detach().flatten(1), num_bits).view_as(w)


def code_change_fraction(w: torch.Tensor, d: torch.Tensor, step_sizes: torch.Tensor, num_bits: int,
                         lr: float = 1.0, max_elements: int = 2**25) -> torch.Tensor:
    """Fraction of integer codes that change if ``w <- w - lr * a_k * d``, for all ``a_k`` at once.

    The codes after the update use the *new* per-channel min/max, as in the reference. All
    candidates are one broadcast ``(K, C_out, fan_in)`` evaluation (chunked over K so that no
    chunk exceeds ``max_elements``); nothing is read back to the host.

    Args:
        w: weight ``(C_out, ...)``.
        d: update direction, same shape as ``w``.
        step_sizes: ``(K,)`` candidate scales ``a_k``.
        num_bits: k, 1..8.
        lr: learning rate multiplying every candidate.
        max_elements: largest trial tensor evaluated at once.

    Returns:
        ``(K,)`` fractions in ``[0, 1]`` (float32, or float64 for float64 weights).

    Examples:
        >>> w = torch.tensor([[0.0, 0.49, 1.5]]); d = torch.tensor([[0.0, -1.0, 0.0]])
        >>> code_change_fraction(w, d, torch.tensor([0.1, 0.3]), 2)  # 0.49 reaches the boundary 0.75 at a=0.26
        tensor([0.0000, 0.3333])
    """
    check_bits(num_bits, "num_bits", range(1, 9))
    if d.shape != w.shape or step_sizes.dim() != 1 or w.dim() < 2:
        raise ValueError(f"need w (C_out, ...) >= 2-D, d of the same shape and 1-D step_sizes; got "
                         f"{tuple(w.shape)}, {tuple(d.shape)}, {tuple(step_sizes.shape)}")
    dtype = torch.promote_types(w.dtype, torch.float32)  # half-precision weights: search in fp32
    rows, dd = w.detach().flatten(1).to(dtype), d.detach().flatten(1).to(dtype)  # (C, n)
    q0 = _row_codes(rows, num_bits)  # (C, n)
    chunk = max(1, max_elements // rows.numel())  # Python ints only: chunking costs no sync
    out = []
    for start in range(0, step_sizes.numel(), chunk):
        a = step_sizes[start:start + chunk].to(rows.device, rows.dtype).view(-1, 1, 1)  # (k, 1, 1)
        # Same arithmetic as the optimizer's update p.add_(d * a, alpha=-lr), element for element.
        trial = torch.add(rows, a * dd, alpha=-lr)  # (k, C, n)
        changed = (_row_codes(trial, num_bits) != q0).flatten(1).sum(1)  # (k,) exact integer counts
        out.append(changed.to(rows.dtype) / rows.numel())
    return torch.cat(out)


# --- argument checks (Python values only: they cost no host synchronisation, even inside step()) ---

def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold is a fraction of a layer's weights and must be in (0, 1), got {threshold!r}")
    return float(threshold)


def _check_lr(lr) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0.0 < lr < math.inf:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")


def _check_flag(value, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_search(lr, threshold, cap, max_doublings, rounds) -> None:
    # The arguments search_scale and reference_search share.
    _check_lr(lr)
    _check_threshold(threshold)
    _check_flag(cap, "cap")
    check_int(max_doublings, "max_doublings", 0, 60)  # 2^128 would overflow float32
    check_int(rounds, "rounds", 1)


def _replay_bisection(fr: torch.Tensor, threshold: float, rounds: int) -> torch.Tensor:
    # fr: (2^rounds,) fractions at a/2 * (1 + i/2^rounds), i = 1..2^rounds. Every midpoint the
    # reference's bisection can visit is one of these, so its path is replayed with tensor ops.
    lo = torch.zeros((), dtype=torch.long, device=fr.device)
    hi = torch.full_like(lo, 2**rounds)
    sel, done = lo.clone(), torch.zeros((), dtype=torch.bool, device=fr.device)
    for _ in range(rounds):
        mid = (lo + hi) // 2
        fm = fr.gather(0, (mid - 1).view(1)).squeeze(0)
        sel = torch.where(done, sel, mid)
        below = fm < threshold
        lo = torch.where(~done & below, mid, lo)
        hi = torch.where(~done & ~below, mid, hi)
        done = done | ((fm - threshold).abs() < threshold / 100)  # the reference's early stop
    return sel - 1  # index into fr


def search_scale(w: torch.Tensor, d: torch.Tensor, lr: float, threshold: float, num_bits: int,
                 cap: bool = False, max_doublings: int = 30, rounds: int = 5,
                 select: str = "bisection") -> tuple[torch.Tensor, torch.Tensor]:
    """Step scale ``a`` so that ≈ ``threshold`` of ``w``'s codes change (§3a step 4), no host sync.

    Stage 1 evaluates ``a = 2^0 .. 2^M`` together (``M = max_doublings``, or 7 when ``cap``) and
    takes the first crossing ``f(a) >= threshold`` (the top of the grid if none). Stage 2
    evaluates the ``2^rounds`` points ``a/2 * (1 + i/2^rounds)`` together and either replays the
    reference's bisection on them (``"bisection"``) or takes the one nearest the threshold
    (``"closest"``). If ``f(1) >= threshold`` the answer is ``a = 1`` (GI never shrinks a step).

    Args:
        w: weight ``(C_out, ...)``; d: look-ahead direction, same shape.
        lr, threshold, num_bits: as in ``GradientInundationSGD``.
        cap: the warm-up cap (stop doubling once ``a > 100``).
        max_doublings: ``M``, 0..60; the reference doubles without bound when uncapped.
        rounds: bisection rounds (``alpha_iter`` = 5), ``>= 1``.
        select: ``"bisection"`` or ``"closest"``.

    Returns:
        ``(a, f)``: 0-d tensors on ``w``'s device, the scale and the fraction it changes.

    Raises:
        ValueError: ``lr`` not a finite number > 0, ``threshold`` outside (0, 1), ``cap`` not a bool,
            ``max_doublings`` not an int in 0..60, ``rounds`` not an int >= 1, an unknown ``select``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> w, d = torch.randn(16, 144, generator=g), torch.randn(16, 144, generator=g)
        >>> a, f = search_scale(w, d, lr=1e-4, threshold=0.01, num_bits=4)
        >>> round(float(a), 2), round(float(f), 4)  # a plain step (a = 1) would change no code
        (49.0, 0.0104)
    """
    _check_search(lr, threshold, cap, max_doublings, rounds)
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    top = min(CAP_DOUBLINGS, max_doublings) if cap else max_doublings
    dtype = torch.promote_types(w.dtype, torch.float32)  # 2^30 overflows float16
    grid = 2.0 ** torch.arange(top + 1, device=w.device, dtype=dtype)  # (top+1,) = 1, 2, 4, ...
    f_grid = code_change_fraction(w, d, grid, num_bits, lr)  # (top+1,)
    crossed = f_grid >= threshold
    # argmax returns the first maximum, i.e. the first crossing; without one, the grid's top (the
    # reference would then bisect [a/2, a] anyway, ending below the threshold).
    j = torch.where(crossed.any(), torch.argmax(crossed.to(torch.uint8)), top)
    a_hi = grid.gather(0, j.view(1))  # (1,)
    n = 2**rounds
    t = torch.arange(1, n + 1, device=w.device, dtype=dtype) / n  # (n,) exact dyadic fractions
    cands = a_hi / 2 * (1 + t)  # (n,) in (a/2, a]
    f_c = code_change_fraction(w, d, cands, num_bits, lr)  # (n,)
    idx = _replay_bisection(f_c, threshold, rounds) if select == "bisection" else \
        torch.argmin((f_c - threshold).abs())  # ties: the first, i.e. the smallest a
    a = torch.where(crossed[0], torch.ones_like(a_hi[0]), cands.gather(0, idx.view(1))[0])
    f = torch.where(crossed[0], f_grid[0], f_c.gather(0, idx.view(1))[0])
    return a, f


def reference_search(w: torch.Tensor, d: torch.Tensor, lr: float, threshold: float, num_bits: int,
                     cap: bool = False, max_doublings: int = 30, rounds: int = 5) -> tuple[float, float]:
    """The reference's sequential doubling + bisection, host syncs and all (the tests' oracle).

    Same arguments as ``search_scale``; returns ``(a, f)`` as Python floats. The reference's
    uncapped loop has no bound; this one stops after ``max_doublings``. As in the reference the
    answer is the *last midpoint evaluated*, so ``f`` may end just below the threshold.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> w, d = torch.randn(16, 144, generator=g), torch.randn(16, 144, generator=g)
        >>> reference_search(w, d, 1e-4, 0.01, 4)[0] == float(search_scale(w, d, 1e-4, 0.01, 4)[0])
        True
    """
    _check_search(lr, threshold, cap, max_doublings, rounds)

    def frac(a: float) -> torch.Tensor:
        return code_change_fraction(w, d, torch.tensor([a], device=w.device), num_bits, lr)[0]

    a, f = 1.0, frac(1.0)
    if bool(f >= threshold):
        return a, float(f)
    for _ in range(max_doublings):
        a *= 2
        f = frac(a)
        if bool(f >= threshold) or (cap and a > 100):
            break
    lo, hi = a / 2, a
    for _ in range(rounds):
        mid = (lo + hi) / 2
        f = frac(mid)
        if bool((f - threshold).abs() < threshold / 100):
            break
        lo, hi = (mid, hi) if bool(f < threshold) else (lo, mid)
    return mid, float(f)


def _check_group(group: dict) -> None:
    """Refuse a param group of ``GradientInundationSGD`` whose settings ``step()`` cannot use.

    Every group is checked once, when it is added (its own values and the defaults it inherits).
    Python values only: no host synchronisation. (A value changed later, by an LR scheduler or by
    hand, is not checked again here; ``search_scale`` re-checks what ``step()`` hands it.)
    """
    _check_lr(group["lr"])
    m, wd = group["momentum"], group["weight_decay"]
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m < 1.0:
        raise ValueError(f"momentum must be a number in [0, 1), got {m!r}")
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not 0.0 <= wd < math.inf:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {wd!r}")
    _check_threshold(group["threshold"])
    check_int(group["max_doublings"], "max_doublings", 1, 60)
    check_int(group["rounds"], "rounds", 1, 10)
    if group["select"] not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {group['select']!r}")
    if group["num_bits"] is not None:
        check_bits(group["num_bits"], "num_bits", range(1, 9))
        if any(p.dim() < 2 for p in group["params"]):
            raise ValueError("a GI group (num_bits set) may only hold (C_out, ...) weights; put biases "
                             "and BN parameters in a group with num_bits=None")


class GradientInundationSGD(torch.optim.Optimizer):
    """Nesterov-momentum SGD whose quantized-weight steps are inflated by GI (AIT, §3a).

    Param groups with an integer ``num_bits`` get GI: each weight's step is the ordinary
    Nesterov step times a factor ``a >= 1`` from ``search_scale`` on the look-ahead direction
    ``d = g + m * (m * buf + g)`` (``g + m * g`` on the first step). Groups with
    ``num_bits=None`` (BN parameters, biases) are plain ``torch.optim.SGD(nesterov=True)``.
    ``step()`` performs no host synchronisation; ``last_stats()`` reads the chosen scales back.

    Args:
        params: parameters or param groups (see ``inundation_param_groups``). A group may set any
            of the keyword arguments below except ``cap_scale``; every group is checked.
        lr: learning rate (AIT: 1e-4), finite and > 0. momentum: m (0.9), in [0, 1).
        weight_decay: (AIT: 0), finite and >= 0.
        threshold: target fraction of codes that change per step (0.001), in (0, 1).
        num_bits: default bit-width of a group (``None``: no GI).
        cap_scale: the warm-up cap of ``search_scale`` (the reference's ``disable_adalr``: on at
            construction, switched off from epoch 5; see ``scale_cap_at_epoch``); a bool.
        max_doublings, rounds, select: see ``search_scale`` (here ``max_doublings`` in 1..60 and
            ``rounds`` in 1..10).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> w = nn.Parameter(torch.randn(16, 144, generator=g)); w.grad = torch.randn(16, 144, generator=g)
        >>> opt = GradientInundationSGD([{"params": [w], "num_bits": 4}], lr=1e-4, threshold=0.01, cap_scale=False)
        >>> q0 = integer_codes(w, 4); opt.step(); opt.last_stats()
        {'group0.0': {'scale': 25.5, 'fraction': 0.0104...}}
        >>> int((integer_codes(w, 4) != q0).sum())  # measured: 24 of the 2304 codes moved
        24
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 threshold: float = 1e-3, num_bits: int | None = None, cap_scale: bool = True,
                 max_doublings: int = 30, rounds: int = 5, select: str = "bisection"):
        _check_flag(cap_scale, "cap_scale")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, num_bits=num_bits,
                        threshold=threshold, max_doublings=max_doublings, rounds=rounds, select=select)
        _check_group(dict(defaults, params=[]))  # the keyword arguments themselves, before any group
        defaults["lr"] = float(lr)
        super().__init__(params, defaults)  # calls add_param_group, which checks every group
        self.cap_scale = cap_scale

    def add_param_group(self, param_group: dict) -> None:
        """``torch.optim.Optimizer.add_param_group``, then ``_check_group`` on the completed group."""
        super().add_param_group(param_group)
        try:
            _check_group(self.param_groups[-1])
        except (TypeError, ValueError):
            self.param_groups.pop()  # leave the optimizer as it was
            raise

    def set_threshold(self, threshold: float) -> None:
        """Set the target fraction of every GI group (e.g. ``threshold_at_epoch(epoch)``)."""
        threshold = _check_threshold(threshold)
        for group in self.param_groups:
            if group["num_bits"] is not None:
                group["threshold"] = threshold

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd, bits = group["lr"], group["momentum"], group["weight_decay"], group["num_bits"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                buf = state.get("momentum_buffer")
                if bits is not None and wd != 0:
                    # The reference's look-ahead uses the raw gradient (no decay term), while the
                    # update below includes it; with AIT's weight_decay = 0 the two coincide.
                    look = g if buf is None or m == 0 else buf * m + g
                    look = g.add(look, alpha=m)
                d_p = g.add(p, alpha=wd) if wd != 0 else g
                if m != 0:  # exactly torch.optim.SGD's single-tensor Nesterov arithmetic
                    if buf is None:
                        buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                    else:
                        buf.mul_(m).add_(d_p)
                    d_p = d_p.add(buf, alpha=m)
                if bits is None:
                    p.add_(d_p, alpha=-lr)
                    continue
                a, f = search_scale(p, d_p if wd == 0 else look, lr, group["threshold"], bits, self.cap_scale,
                                    group["max_doublings"], group["rounds"], group["select"])
                state["scale"], state["fraction"] = a, f  # device tensors; read by last_stats()
                p.add_(d_p * a, alpha=-lr)  # d_p * 1.0 is exact, so a = 1 is plain SGD bit for bit
        return loss

    def last_stats(self) -> dict[str, dict[str, float]]:
        """``{name: {"scale": a, "fraction": f}}`` of the last step, per GI weight (syncs here).

        Names come from a group's ``names`` list if present, else ``"group{i}.{j}"``.
        """
        stats = {}
        for i, group in enumerate(self.param_groups):
            names = group.get("names") or [f"group{i}.{j}" for j in range(len(group["params"]))]
            for name, p in zip(names, group["params"]):
                st = self.state.get(p, {})
                if "scale" in st:
                    stats[name] = {"scale": float(st["scale"]), "fraction": float(st["fraction"])}
        return stats


def inundation_param_groups(qmodel: nn.Module) -> list[dict]:
    """Split ``qmodel``'s parameters as AIT does: quantized conv/FC weights get GI, the rest not.

    Returns:
        One group per weight bit-width (``num_bits`` = that ``w_bits``) plus one plain group
        (``num_bits=None``) with BN parameters and biases; each group carries ``names``.

    Examples:
        >>> q = quantize_model(nn.Sequential(nn.Linear(4, 3)), QuantConfig(4, 4))
        >>> [(g["names"], g["num_bits"]) for g in inundation_param_groups(q)]
        [(['0.weight'], 4), (['0.bias'], None)]
    """
    gi, names = {}, {}
    for mod_name, mod in qmodel.named_modules():
        if isinstance(mod, (QuantConv2d, QuantLinear)) and mod.weight.requires_grad:
            gi.setdefault(mod.w_bits, []).append(mod.weight)
            names[id(mod.weight)] = f"{mod_name}.weight" if mod_name else "weight"  # a bare layer
    if not gi:
        raise ValueError("qmodel has no QuantConv2d/QuantLinear layer: build it with quantize_model first")
    rest = [(n, p) for n, p in qmodel.named_parameters() if p.requires_grad and id(p) not in names]
    groups = [{"params": ps, "num_bits": b, "names": [names[id(p)] for p in ps]} for b, ps in sorted(gi.items())]
    if rest:
        groups.append({"params": [p for _, p in rest], "num_bits": None, "names": [n for n, _ in rest]})
    return groups


def threshold_at_epoch(epoch: int, base: float = 1e-3, decay_epochs=(100, 200, 300), rate: float = 0.1) -> float:
    """AIT's threshold schedule: ``base`` times ``rate`` for every decay epoch reached.

    Args:
        epoch: the epoch, an int >= 0.
        base: the threshold before the first decay, in (0, 1).
        decay_epochs: the epochs at which it is multiplied by ``rate``.
        rate: the factor, in (0, 1].

    Examples:
        >>> threshold_at_epoch(99), threshold_at_epoch(100), round(threshold_at_epoch(350), 9)
        (0.001, 0.0001, 1e-06)
    """
    check_int(epoch, "epoch", 0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be a number in (0, 1], got {rate!r}")
    return _check_threshold(base) * rate ** sum(epoch >= e for e in decay_epochs)


def scale_cap_at_epoch(epoch: int, warmup_epochs: int = 4) -> bool:
    """Whether the reference's warm-up cap (``disable_adalr``) is on: epochs ``0..warmup_epochs``.

    Args:
        epoch, warmup_epochs: ints >= 0.

    Examples:
        >>> scale_cap_at_epoch(4), scale_cap_at_epoch(5)
        (True, False)
    """
    check_int(epoch, "epoch", 0)
    check_int(warmup_epochs, "warmup_epochs", 0)
    return epoch <= warmup_epochs


def inundation_demo(num_steps: int = 10, threshold: float = 1e-3, w_bits: int = 4, lr: float = 1e-4,
                    batch_size: int = 32, seed: int = 0) -> dict:
    """Fraction of integer codes that change per step, plain Nesterov SGD vs GI, on a tiny CNN.

    Both runs start from the same quantized CNN (W{w_bits}A{w_bits}) and see the same random batch
    (cross-entropy on random labels); the fraction is measured from the codes before and after
    each step. Takes about a second on a CPU.

    Args:
        num_steps: optimizer steps per run, an int >= 1.
        threshold, lr: GI's target fraction and the learning rate of both runs.
        w_bits: weight and activation bit-width. batch_size, seed: the random batch.

    Returns:
        ``{"layers": names, "plain": (num_steps, L), "inundated": (num_steps, L),
        "scale": (num_steps, L) chosen a, "threshold": threshold}``.

    Examples:
        >>> out = inundation_demo(num_steps=3)
        >>> float(out["plain"].median()), round(float(out["inundated"].median()), 4)
        (0.0, 0.0011)
    """
    check_int(num_steps, "num_steps", 1)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 100))
    x, y = torch.randn(batch_size, 3, 16, 16, generator=gen), torch.randint(0, 100, (batch_size,), generator=gen)
    out = {"threshold": threshold}
    for mode in ("plain", "inundated"):
        qnet = quantize_model(net, QuantConfig(w_bits=w_bits, a_bits=w_bits))
        groups = inundation_param_groups(qnet)
        out["layers"] = groups[0]["names"]
        if mode == "plain":
            opt = torch.optim.SGD(qnet.parameters(), lr=lr, momentum=0.9, nesterov=True)
        else:
            opt = GradientInundationSGD(groups, lr=lr, threshold=threshold, cap_scale=False)
        rows, scales = [], []
        for _ in range(num_steps):
            before = [integer_codes(w, w_bits) for w in groups[0]["params"]]
            opt.zero_grad()
            F.cross_entropy(qnet(x), y).backward()
            opt.step()
            rows.append([float((integer_codes(w, w_bits) != q).float().mean())
                         for w, q in zip(groups[0]["params"], before)])
            if mode == "inundated":
                scales.append([opt.last_stats()[name]["scale"] for name in out["layers"]])
        out[mode] = torch.tensor(rows)
    out["scale"] = torch.tensor(scales)
    return out
