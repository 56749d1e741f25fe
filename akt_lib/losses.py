"""Student and generator losses of the zero-shot family, and AKT's refined feature distillation.

Notation (methods.md §1.4, §1.6, §2a, §3a): ``s`` = quantized student logits, ``t`` = teacher
logits, both ``(B, C)``; ``y`` = int64 labels ``(B,)``; feature maps are ``(N, C, H, W)``.

* Student losses (chapter 5: GDFQ and AIT; chapter 4: AdaDFQ/AKT): ``gdfq_student_loss``,
  ``ait_student_loss``, ``adadfq_student_loss``, ``akt_student_loss``. Teacher logits and features
  are *targets*: they are detached inside, so a student loss never sends gradient to the teacher
  (or, through it, to the generator).
* AKT's refined feature distillation: ``spatial_attention``, ``channel_attention``, ``rfd_loss``.
* Generator losses (chapter 3: GDFQ; chapter 4: AdaDFQ): ``gdfq_generator_loss``, ``adadfq_generator_loss``,
  ``adadfq_margin_loss``. Here nothing is detached: the generator learns through both networks.

Every function returns a scalar tensor, except ``akt_student_loss``, which returns
``(loss, parts)`` with the unweighted terms for logging, and ``adadfq_generator_loss(...,
return_parts=True)``. The parts are detached tensors (no host sync; call ``float()`` to log).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .utils import check_positive

__all__ = [
    "spatial_attention", "channel_attention", "rfd_loss", "RFD_FORMS", "RELEASED_RFD_LAMBDA",
    "gdfq_student_loss", "ait_student_loss", "adadfq_student_loss", "akt_student_loss", "mix_rfd",
    "gdfq_generator_loss", "adadfq_generator_loss", "adadfq_margin_loss",
]

RFD_FORMS = ("released", "averaged")
RELEASED_RFD_LAMBDA = 1000.0  # the released AKT trainer's `lam` (options.py, not the hocon)


# --- input checks ------------------------------------------------------------------------------

def _check_feature(f: torch.Tensor, name: str) -> None:
    if not isinstance(f, torch.Tensor) or f.dim() != 4:
        got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(f"{name} must be a feature map of shape (N, C, H, W), got {got}")


def _check_logits(s: torch.Tensor, t: torch.Tensor, names: str = "s_logits/t_logits") -> None:
    if not (isinstance(s, torch.Tensor) and isinstance(t, torch.Tensor)) or s.dim() != 2 or s.shape != t.shape:
        shapes = [tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__ for x in (s, t)]
        raise ValueError(f"{names} must both be (B, num_classes) logits of the same shape, got {shapes}")


def _check_labels(y: torch.Tensor, logits: torch.Tensor, name: str = "y") -> None:
    if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.shape != logits.shape[:1]:
        got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"{name} must be int64 class indices of shape ({logits.shape[0]},), got {got}")


# Checks of Python numbers only: these losses run inside compiled and graph-captured steps, where
# a check of a tensor's value would synchronise with the device (or break the graph).

def _check_weight(value: float, name: str) -> None:
    # A loss weight or mixing coefficient: finite and >= 0 (0 switches a term off).
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_scalar(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.numel() != 1:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a scalar tensor (the precomputed BNS loss), got {got}")


# --- AKT: attention maps and refined feature distillation (§2a) ----------------------------------

def _upcast(f: torch.Tensor) -> torch.Tensor:
    # Half-precision maps (autocast) are squared and averaged in float32; float64 stays float64.
    return f.float() if f.dtype in (torch.float16, torch.bfloat16) else f


def spatial_attention(f: torch.Tensor) -> torch.Tensor:
    """Spatial attention map: channel-mean of ``f²``, flattened, L2-normalised per sample.

    This is Zagoruyko & Komodakis' attention-transfer map, as AKT uses it (chapter 4).
    Half-precision input is computed in float32.

    Args:
        f: feature map ``(N, C, H, W)``.

    Returns:
        ``(N, H*W)``, each row of unit L2 norm (a zero map stays zero).

    Examples:
        >>> spatial_attention(torch.ones(2, 3, 2, 2))
        tensor([[0.5000, 0.5000, 0.5000, 0.5000],
                [0.5000, 0.5000, 0.5000, 0.5000]])
    """
    _check_feature(f, "f")
    a = _upcast(f).pow(2).mean(dim=1).flatten(1)  # (N, H*W)
    return F.normalize(a, p=2, dim=1)


def channel_attention(f: torch.Tensor) -> torch.Tensor:
    """Channel attention: spatial mean of ``f²``, softmax over channels (chapter 4).

    Args:
        f: feature map ``(N, C, H, W)``.

    Returns:
        ``(N, C)``, each row a probability vector.

    Examples:
        >>> channel_attention(torch.zeros(1, 4, 3, 3))
        tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """
    _check_feature(f, "f")
    return F.softmax(_upcast(f).pow(2).mean(dim=(2, 3)), dim=1)  # (N, C)


def _attention_kl(a_s: torch.Tensor, a_t: torch.Tensor, tau: float) -> torch.Tensor:
    # KL(softmax(a_t/tau) || softmax(a_s/tau)) per sample, (N,). AKT softmaxes the attentions
    # *again* (the channel one is already a softmax): with tau = 8 both become nearly uniform,
    # which is why the released code needs its factor 1000.
    log_p_s = F.log_softmax(a_s / tau, dim=1)
    log_p_t = F.log_softmax(a_t / tau, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)


def rfd_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
             tau: float = 8.0, form: str = "released") -> torch.Tensor:
    """AKT's refined feature distillation: KL between teacher and student attention maps.

    For each layer ``l`` and attention ``a`` in (spatial, channel):
    ``KL_l,a = KL(softmax(a(F_t)/tau) || softmax(a(F_s)/tau))`` per sample. Chapter 4.

    * ``form="released"`` (the default): the arithmetic methods.md §2a reads from the authors'
      trainer — reduction ``'sum'`` over the batch (and positions/channels), **summed** over
      layers, and **multiplied by** ``RELEASED_RFD_LAMBDA = 1000`` (its ``lam``). The ×1000 is part
      of this form, so the value is exactly the term that trainer adds to its loss; divide by
      ``RELEASED_RFD_LAMBDA`` for the raw sum. This is RFD "as described" (§2a'), the form the
      book trains with; the released trainer itself computed it on empty feature lists, so there
      it was always 0.
    * ``form="averaged"``: each KL averaged over the batch, spatial + channel summed per layer,
      then **averaged over layers** — independent of batch size and depth, and ``1000·N·L`` times
      smaller than ``"released"``. A normalisation of the library's own (the paper body could not
      be read), kept to show how small the divergences are per image and layer (chapter 4).

    Args:
        student_feats: list of student feature maps, each ``(N, C_l, H_l, W_l)``.
        teacher_feats: the teacher's maps of the same images, same length and shapes. Detached
            here: the teacher is the target.
        tau: softmax temperature of the attentions (AKT's ``fd_temperature`` = 8).
        form: ``"released"`` or ``"averaged"``.

    Returns:
        Scalar tensor, ``>= 0``; 0 when the features are equal.

    Raises:
        ValueError: empty lists (RFD must really distil teacher features), different lengths,
            a pair of mismatched shapes, a bad ``tau`` or ``form``.

    Examples:
        >>> fs, ft = [torch.ones(2, 4, 3, 3)], [torch.ones(2, 4, 3, 3)]
        >>> float(rfd_loss(fs, ft))
        0.0
    """
    if form not in RFD_FORMS:
        raise ValueError(f"form must be one of {RFD_FORMS}, got {form!r}")
    check_positive(tau, "tau")
    if not isinstance(student_feats, (list, tuple)) or not isinstance(teacher_feats, (list, tuple)):
        raise TypeError("student_feats and teacher_feats must be lists of (N, C, H, W) tensors")
    if len(student_feats) == 0 or len(teacher_feats) == 0:
        raise ValueError(
            f"rfd_loss got {len(student_feats)} student and {len(teacher_feats)} teacher feature maps: RFD "
            "must really distil teacher features (an empty list is exactly the released AKT bug that made "
            "the term 0). Collect both with a FeatureTap on the same images before calling it."
        )
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"student_feats has {len(student_feats)} maps but teacher_feats has {len(teacher_feats)}")
    per_layer = []
    for i, (fs, ft) in enumerate(zip(student_feats, teacher_feats)):
        _check_feature(fs, f"student_feats[{i}]")
        _check_feature(ft, f"teacher_feats[{i}]")
        if fs.shape != ft.shape:
            raise ValueError(f"layer {i}: student map {tuple(fs.shape)} != teacher map {tuple(ft.shape)}")
        ft = ft.detach()
        kl_sp = _attention_kl(spatial_attention(fs), spatial_attention(ft), tau)  # (N,)
        kl_ch = _attention_kl(channel_attention(fs), channel_attention(ft), tau)  # (N,)
        reduce = torch.mean if form == "averaged" else torch.sum
        per_layer.append(reduce(kl_sp) + reduce(kl_ch))
    total = torch.stack(per_layer)  # (L,)
    return total.mean() if form == "averaged" else RELEASED_RFD_LAMBDA * total.sum()


# --- student losses (§1.6, §2a, §3a) -----------------------------------------------------------

def _kd_kl_mean(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    # T^2 * nn.KLDivLoss()(log_softmax(s/T), softmax(t/T)) with the default reduction 'mean':
    # it divides the summed KL by B*C (batch *and classes), not by B — the references' quirk,
    # kept: the KD term's effective weight is T^2/C. Written as sum/numel to avoid the warning.
    log_p_s = F.log_softmax(s / T, dim=1)
    p_t = F.softmax(t.detach() / T, dim=1)
    return T * T * F.kl_div(log_p_s, p_t, reduction="sum") / s.numel()


def gdfq_student_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor,
                      T: float = 20.0, alpha: float = 1.0, ce_weight: float = 1.0) -> torch.Tensor:
    """GDFQ's student loss: ``T²·alpha·KL_mean + ce_weight·CE(s, y)`` (chapter 5, §1.6).

    ``KL_mean`` is ``nn.KLDivLoss()``'s default ``'mean'`` reduction, i.e. the KL summed over
    batch and classes divided by ``B·C`` (not ``B``): the reference's quirk, kept.

    Args:
        s_logits, t_logits: ``(B, C)``; the teacher's are detached.
        y: ``(B,)`` int64 labels of the generated images.
        T: distillation temperature (> 0); alpha: KD weight; ce_weight: CE weight (both >= 0).

    Returns:
        Scalar tensor.

    Examples:
        >>> s = torch.zeros(2, 10); y = torch.tensor([0, 1])
        >>> round(float(gdfq_student_loss(s, s, y)), 4)  # KL = 0, CE = log 10
        2.3026
    """
    _check_logits(s_logits, t_logits)
    _check_labels(y, s_logits)
    check_positive(T, "T")
    _check_weight(alpha, "alpha")
    _check_weight(ce_weight, "ce_weight")
    return alpha * _kd_kl_mean(s_logits, t_logits, T) + ce_weight * F.cross_entropy(s_logits, y)


def ait_student_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, T: float = 20.0, kd_scale: float = 1.0,
                     ce_scale: float = 0.0, y: torch.Tensor | None = None) -> torch.Tensor:
    """AIT's student loss: ``kd_scale·T²·KL_mean + ce_scale·CE(s, y)``; KL only by default (chapter 5, §3a).

    Same ``'mean'`` (÷ B·C) reduction as ``gdfq_student_loss``.

    Args:
        s_logits, t_logits: ``(B, C)``; the teacher's are detached.
        T: temperature (> 0); kd_scale, ce_scale: weights, >= 0 (AIT's scripts: 1 and 0).
        y: ``(B,)`` int64 labels, required only when ``ce_scale != 0`` (checked whenever given).

    Returns:
        Scalar tensor.

    Examples:
        >>> float(ait_student_loss(torch.zeros(2, 10), torch.zeros(2, 10)))
        0.0
    """
    _check_logits(s_logits, t_logits)
    check_positive(T, "T")
    _check_weight(kd_scale, "kd_scale")
    _check_weight(ce_scale, "ce_scale")
    if y is not None:
        _check_labels(y, s_logits)
    loss = kd_scale * _kd_kl_mean(s_logits, t_logits, T)
    if ce_scale != 0:
        if y is None:
            raise ValueError("ait_student_loss: ce_scale != 0 needs the labels y")
        loss = loss + ce_scale * F.cross_entropy(s_logits, y)
    return loss


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    # Shannon entropy (nats) of softmax(logits) per row, (B,).
    return -(F.softmax(logits, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1)


def adadfq_student_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, T: float = 20.0) -> torch.Tensor:
    """AdaDFQ's student loss: ``-T²·mean_i H(softmax((t_i - s_i)/T))`` (chapter 4, §1.6).

    Not a KL divergence, although AdaDFQ's and AKT's code call it ``loss_fn_kd`` and the AKT
    paper "L_KL": it *maximises the entropy of the logit difference*, which is largest when
    ``s = t + const`` per sample. No labels, no CE.

    Args:
        s_logits, t_logits: ``(B, C)``; the teacher's are detached.
        T: temperature (20).

    Returns:
        Scalar tensor, ``>= -T²·log C`` (reached when ``s - t`` is constant per row).

    Examples:
        >>> round(float(adadfq_student_loss(torch.zeros(3, 10), torch.ones(3, 10))), 2)  # -400 log 10
        -921.03
    """
    _check_logits(s_logits, t_logits)
    check_positive(T, "T")
    return -T * T * _entropy((t_logits.detach() - s_logits) / T).mean()


def akt_student_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, student_feats: Sequence[torch.Tensor],
                     teacher_feats: Sequence[torch.Tensor], alpha: float = 0.5, tau: float = 8.0,
                     form: str = "released", T: float = 20.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """AKT's student loss: entropy "KD" of AdaDFQ plus refined feature distillation (chapter 4, §2a).

    * ``form="released"`` (the default): ``adadfq_student_loss + rfd_loss(form="released")`` — the
      trainer's sum (methods.md §2a), whose RFD term carries the factor 1000 and no ``alpha``
      (``alpha`` ignored). The paper's ``α·L_RFD + (1 − α)·L_KL`` is realised by that factor (§2a).
    * ``form="averaged"``: ``alpha·rfd_loss(form="averaged") + (1 - alpha)·adadfq_student_loss``,
      the paper's mixing applied to the library's averaged RFD (``alpha = 0.5`` comes from a
      third-party summary, unverified). Its RFD gradient is about a millionth of the logit loss's.

    Args:
        s_logits, t_logits: ``(B, C)``.
        student_feats, teacher_feats: matching lists of ``(B, C_l, H_l, W_l)`` maps (e.g. from
            ``akt_lib.features.FeatureTap``); the teacher's are detached.
        alpha: RFD weight of the averaged form, in [0, 1] (checked by ``mix_rfd`` in both forms).
        tau: attention temperature; form: ``"released"`` or ``"averaged"``; T: KD temperature.

    Returns:
        ``(loss, parts)``: the scalar loss to backpropagate, and a dict of detached scalar
        tensors ``{"kd": adadfq_student_loss, "rfd": rfd_loss(form=form)}`` (unweighted).

    Examples:
        >>> f = [torch.ones(2, 4, 3, 3)]
        >>> loss, parts = akt_student_loss(torch.zeros(2, 10), torch.zeros(2, 10), f, f)
        >>> sorted(parts), float(parts["rfd"])
        (['kd', 'rfd'], 0.0)
    """
    kd = adadfq_student_loss(s_logits, t_logits, T)
    rfd = rfd_loss(student_feats, teacher_feats, tau=tau, form=form)
    return mix_rfd(kd, rfd, form, alpha), {"kd": kd.detach(), "rfd": rfd.detach()}


def mix_rfd(host: torch.Tensor, rfd: torch.Tensor, form: str = "released", alpha: float = 0.5) -> torch.Tensor:
    """A host student loss with AKT's RFD term mixed in, as ``rfd_loss(form=...)`` computed it.

    ``"released"``: ``host + rfd`` (the ×1000 is inside the released-form ``rfd``; no ``alpha``).
    ``"averaged"``: ``alpha·rfd + (1 - alpha)·host``, the paper's mixing. ``akt_student_loss`` is
    this with AdaDFQ's entropy loss as the host; the zero-shot trainer also puts RFD on GDFQ's.

    Args:
        host, rfd: scalar tensors, the host student loss and ``rfd_loss(form=form)``.
        form: ``"released"`` or ``"averaged"``.
        alpha: the RFD weight of the averaged form, a number in [0, 1]. The released form ignores
            it, but a value outside [0, 1] is refused there too (it can only be a mistake).

    Raises:
        ValueError: an unknown ``form``, or ``alpha`` not a number in [0, 1].

    Examples:
        >>> host, rfd = torch.tensor(2.0), torch.tensor(6.0)
        >>> float(mix_rfd(host, rfd)), float(mix_rfd(host, rfd, "averaged", alpha=0.25))
        (8.0, 3.0)
    """
    if form not in RFD_FORMS:
        raise ValueError(f"form must be one of {RFD_FORMS}, got {form!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return alpha * rfd + (1.0 - alpha) * host if form == "averaged" else host + rfd


# --- generator losses (§1.4) ------------------------------------------------------------------

def gdfq_generator_loss(t_logits: torch.Tensor, y: torch.Tensor, bns: torch.Tensor,
                        bns_weight: float = 0.1) -> torch.Tensor:
    """GDFQ's generator loss: ``CE(t, y) + 0.1·BNS`` (chapter 3, §1.4; also GDFQ+AIT).

    Args:
        t_logits: teacher logits of the generated images ``(B, C)`` (not detached).
        y: ``(B,)`` int64 labels the generator was asked for.
        bns: the precomputed BN-statistics loss, a scalar tensor.
        bns_weight: its weight (0.1), >= 0.

    Examples:
        >>> round(float(gdfq_generator_loss(torch.zeros(2, 10), torch.tensor([0, 1]), torch.tensor(1.0))), 4)
        2.4026
    """
    if not isinstance(t_logits, torch.Tensor) or t_logits.dim() != 2:
        raise ValueError(f"t_logits must be (B, num_classes) logits, got {getattr(t_logits, 'shape', t_logits)!r}")
    _check_labels(y, t_logits)
    _check_scalar(bns, "bns")
    _check_weight(bns_weight, "bns_weight")
    return F.cross_entropy(t_logits, y) + bns_weight * bns.reshape(())


def adadfq_margin_loss(t_logits: torch.Tensor, s_logits: torch.Tensor, lambda_l: float = 0.1,
                       lambda_u: float = 0.8) -> torch.Tensor:
    """AdaDFQ's margin loss on the normalised entropy of ``softmax(t - s)`` (chapter 4, §1.4).

    ``H_i`` = entropy of ``softmax(t_i - s_i)``; ``H'_i = (H_i - min H)/(log C - min H)`` with the
    minimum over the batch; loss ``= mean(relu(lambda_l - H')) + mean(relu(H' - lambda_u))``.
    The references hard-code a zero vector of the batch size (16 in AdaDFQ, 200 in AKT); here the
    hinge is a clamp, so any batch size works. The gradient flows through ``min H`` too, as there.

    Args:
        t_logits, s_logits: ``(B, C)`` with ``C >= 2`` (``log C`` normalises the entropy; not
            detached: the generator is trained through both).
        lambda_l, lambda_u: lower and upper margins, ``0 <= lambda_l <= lambda_u <= 1``.

    Returns:
        Scalar tensor. (If every row has the maximal entropy the denominator is 0; it is clamped
        to a tiny positive number, giving ``H' = 0``.)

    Examples:
        >>> t = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
        >>> round(float(adadfq_margin_loss(t, torch.zeros(2, 2))), 4)  # H' = (0, 1): 0.1/2 + 0.2/2
        0.15
    """
    _check_logits(t_logits, s_logits, "t_logits/s_logits")
    if t_logits.shape[1] < 2:  # log 1 = 0: the normalised entropy would be meaningless
        raise ValueError(f"t_logits must have at least 2 classes, got shape {tuple(t_logits.shape)}")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lambda_l, lambda_u))
    if not (numbers and 0.0 <= lambda_l <= lambda_u <= 1.0):
        raise ValueError(f"need 0 <= lambda_l <= lambda_u <= 1, got lambda_l={lambda_l!r}, lambda_u={lambda_u!r}")
    h = _entropy(t_logits - s_logits)  # (B,)
    h_min = h.min()
    denom = (math.log(t_logits.shape[1]) - h_min).clamp_min(torch.finfo(h.dtype).tiny)
    h_norm = (h - h_min) / denom  # (B,) in [0, 1]
    return (lambda_l - h_norm).clamp_min(0).mean() + (h_norm - lambda_u).clamp_min(0).mean()


def adadfq_generator_loss(t_logits: torch.Tensor, s_logits: torch.Tensor, y: torch.Tensor, bns: torch.Tensor,
                          alpha_ds: float = 0.2, alpha_as: float = 0.1, lambda_l: float = 0.1,
                          lambda_u: float = 0.8, beta: float = 1.0, gamma: float = 1.0,
                          return_parts: bool = False):
    """AdaDFQ's (and AKT's) generator loss ``L_h + beta·L_onehot + gamma·BNS`` (chapter 4, §1.4).

    ``L_onehot = alpha_ds·CE(softmax(t - s), y) + alpha_as·CE(softmax(t + s), y)``: the
    cross-entropy of the distributions ``softmax(t ∓ s)`` against the one-hot labels, i.e.
    ``F.cross_entropy`` applied to the logits ``t - s`` and ``t + s`` (one softmax, not two).
    ``L_h = adadfq_margin_loss``. Note the BNS weight ``gamma = 1`` (GDFQ uses 0.1).

    Args:
        t_logits, s_logits: ``(B, C)`` on the generated images (not detached).
        y: ``(B,)`` int64 labels; bns: precomputed scalar BN-statistics loss.
        alpha_ds, alpha_as, lambda_l, lambda_u, beta, gamma: AdaDFQ's weights (defaults = its);
            ``alpha_ds``, ``alpha_as``, ``beta``, ``gamma`` finite and >= 0.
        return_parts: also return ``{"margin", "ds", "as", "onehot", "bns"}`` (detached).

    Returns:
        The scalar loss, or ``(loss, parts)`` when ``return_parts``.

    Examples:
        >>> t, s, y = torch.zeros(2, 10), torch.zeros(2, 10), torch.tensor([0, 1])
        >>> round(float(adadfq_generator_loss(t, s, y, torch.tensor(0.0))), 4)  # 0.3 log 10 + 0.1
        0.7908
    """
    _check_logits(t_logits, s_logits, "t_logits/s_logits")
    _check_labels(y, t_logits)
    _check_scalar(bns, "bns")
    for name, value in (("alpha_ds", alpha_ds), ("alpha_as", alpha_as), ("beta", beta), ("gamma", gamma)):
        _check_weight(value, name)
    margin = adadfq_margin_loss(t_logits, s_logits, lambda_l, lambda_u)
    l_ds = F.cross_entropy(t_logits - s_logits, y)  # disagreement
    l_as = F.cross_entropy(t_logits + s_logits, y)  # agreement
    onehot = alpha_ds * l_ds + alpha_as * l_as
    bns = bns.reshape(())
    loss = margin + beta * onehot + gamma * bns
    if not return_parts:
        return loss
    parts = {"margin": margin, "ds": l_ds, "as": l_as, "onehot": onehot, "bns": bns}
    return loss, {k: v.detach() for k, v in parts.items()}
