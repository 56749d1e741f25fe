"""One trainer for the zero-shot (data-free) quantization family: GDFQ, AdaDFQ, AKT, AIT.

They are one program with different loss lines (methods.md §1): per iteration

1. sample ``(z, y)``, generate images ``x = G(z, y)``;
2. **generator step**: teacher forward on ``x`` (BN-statistics tap, and AKT's feature tap),
   the generator loss (GDFQ: CE + 0.1·BNS; AdaDFQ/AKT: margin + disagreement/agreement CE + BNS,
   which also runs the student on ``x``), one Adam step of G;
3. **student step** on ``x.detach()`` (after the warm-up epochs only): the student loss (GDFQ:
   T²·KL + CE; AIT: KL only; AdaDFQ: the entropy loss; AKT: + refined feature distillation against
   the teacher features of the *same* images), one SGD step (AIT: gradient inundation).

Schedule (§1.5): ``warmup_epochs`` epochs train only G while the student's activation ranges
calibrate (every student forward updates them); ranges are frozen after every epoch and stay
frozen from the end of warm-up on. The student stays in ``eval()`` mode (its BatchNorm uses the
teacher's running statistics; BN affine parameters are still trained). Multi-step LR for G and Q.
Test accuracy after every epoch, with the epoch's mean losses and its time (``train_s``: the
steps, a first epoch's also compiling or capturing them; ``eval_s``: the evaluation); the record
keeps best *and* final.

Runs checkpoint atomically every ``checkpoint_every`` iterations and at every epoch end, and
``train_zsq(..., resume=True)`` continues from the last checkpoint bit-for-bit on the CPU.
``time_budget_s`` stops cleanly (checkpoint written) so a run can span several 10-minute commands.
"""

from __future__ import annotations

import copy
import math
import re
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import losses as L
from .bns import BNStatsTap, bns_loss
from .data import check_dataset, fixed_subset, load_split
from .evaluate import evaluate
from .fast import (compile_step, fused_kwargs, mark_step_begin, record_fallbacks, record_fast_mode,
                   resolve_fast)
from .features import FeatureTap
from .generator import GDFQGenerator, sample_latent
from .inundation import GradientInundationSGD, inundation_param_groups, scale_cap_at_epoch, threshold_at_epoch
from .quant import QuantConfig, freeze_act_ranges, quantize_model, unfreeze_act_ranges
from .records import (StopOnSignal, finish_record, load_checkpoint, mark_diverged, mark_failed, new_record,
                      resume_teacher, save_checkpoint, save_record, start_segment)
from .utils import check_count, check_int, check_seconds, get_device

__all__ = ["ZSQConfig", "train_zsq", "load_run", "kept_checkpoint", "cuda_auto_mode", "stat_keys", "GENERATOR_LOSSES",
           "STUDENT_LOSSES", "RFD_MODES", "LOSS_KEYS", "DIAGNOSTIC_KEYS", "ADADFQ_DIAGNOSTIC_KEYS",
           "TIME_KEYS"]

GENERATOR_LOSSES = ("gdfq", "adadfq")
STUDENT_LOSSES = ("gdfq", "ait", "adadfq")
#: "off": no feature term; "released": L_KL + 1000·RFD (batch-sum, layer-sum: the arithmetic of
#: methods.md §2a, i.e. RFD "as described", with working feature lists — AKT's rows);
#: "released-zero": the released trainer as it really runs — RFD computed on emptied feature
#: lists, i.e. exactly 0 (§2a'), kept as a named control; "averaged": α·RFD_mean + (1−α)·L_KL
#: with the library's batch- and layer-averaged RFD (chapter 4 shows its RFD gradient is ~1e-6 of
#: the logit loss's: an option for exercises, not a row).
RFD_MODES = ("off", "released", "released-zero", "averaged")
_RFD_ON = ("released", "averaged")
#: What every iteration reports: its losses and the norm of the student's gradient (``grad_s``, 0 while
#: the student does not train; before any update, e.g. gradient inundation, changes it). The record's
#: history keeps their mean over each epoch: a diverging run shows its gradient growing there first.
LOSS_KEYS = ("loss_g", "loss_s", "bns", "rfd", "grad_s")
#: Diagnostics, for reading a run that goes wrong (they train nothing; epoch means in the history):
#: ``ce_t``, the teacher's cross-entropy on the generated images against their labels (how much the
#: images still look like their class to the teacher: GDFQ's generator term, a diagnostic elsewhere);
#: ``agree``, the % of generated images on which the student's top class is the teacher's;
#: ``grad_g``, the norm of the generator's gradient. AdaDFQ's generator loss adds its parts, unweighted:
#: ``g_margin`` (L_h), ``g_ds`` (the disagreement CE) and ``g_as`` (the agreement CE); ``loss_g`` =
#: g_margin + 0.2·g_ds + 0.1·g_as + bns.
DIAGNOSTIC_KEYS = ("ce_t", "agree", "grad_g")
ADADFQ_DIAGNOSTIC_KEYS = ("g_margin", "g_ds", "g_as")
#: The history's per-epoch times in seconds (its steps; its evaluation): two runs of one configuration
#: differ in them and in nothing else on the CPU.
TIME_KEYS = ("train_s", "eval_s")


def stat_keys(config: "ZSQConfig") -> tuple[str, ...]:
    """What a run of ``config`` reports per iteration (and its history per epoch): ``LOSS_KEYS``, then
    ``DIAGNOSTIC_KEYS``, then AdaDFQ's generator parts when it uses that generator loss.

    Examples:
        >>> stat_keys(ZSQConfig())[-3:], stat_keys(ZSQConfig(generator_loss="adadfq"))[-3:]
        (('ce_t', 'agree', 'grad_g'), ('g_margin', 'g_ds', 'g_as'))
    """
    return LOSS_KEYS + DIAGNOSTIC_KEYS + (ADADFQ_DIAGNOSTIC_KEYS if config.generator_loss == "adadfq" else ())


@dataclass(frozen=True)
class ZSQConfig:
    """Everything a zero-shot run needs; defaults are GDFQ's CIFAR ResNet-20 hocon (§1.5).

    Method switches compose: ``generator_loss`` × ``student_loss`` × ``rfd`` × ``inundation``
    (e.g. AKT = adadfq/adadfq/released; GDFQ+AIT = gdfq/ait/inundation). ``akt_alpha`` is used
    by ``rfd="averaged"`` only; its 0.5 comes from a third-party summary of the paper (unverified).
    """

    # what is quantized, against which teacher
    dataset: str = "cifar10-jpeg"
    teacher: str = "auto"  # a name in akt_lib.models.TEACHERS; "auto" picks per dataset
    w_bits: int = 4
    a_bits: int = 4
    range_update: str = "ema_biased"
    # method
    generator_loss: str = "gdfq"
    student_loss: str = "gdfq"
    rfd: str = "off"
    akt_alpha: float = 0.5
    rfd_tau: float = 8.0
    temperature: float = 20.0
    gdfq_bns_weight: float = 0.1
    inundation: bool = False
    # GI's code-change target, ×lr_gamma at each of lr_milestones: AIT's --threshold_decay_ep and
    # --threshold_decay_rate equal its LR schedule (§3a), so a profile that moves the one moves the other
    gi_threshold: float = 1e-3
    # schedule
    epochs: int = 400
    iters_per_epoch: int = 200
    warmup_epochs: int = 4
    batch_size: int = 200
    latent_dim: int = 100
    lr_s: float = 1e-4
    lr_g: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    g_betas: tuple[float, float] = (0.5, 0.999)
    lr_milestones: tuple[int, ...] = (100, 200, 300)
    lr_gamma: float = 0.1
    # evaluation / bookkeeping
    eval_batch_size: int = 200
    eval_subset: int | None = None  # None: the whole test set
    checkpoint_every: int = 1000  # iterations
    seed: int = 0
    profile: str = "paper"

    def __post_init__(self):
        check_dataset(self.dataset)
        QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits, range_update=self.range_update)
        for name, value, options in (("generator_loss", self.generator_loss, GENERATOR_LOSSES),
                                     ("student_loss", self.student_loss, STUDENT_LOSSES),
                                     ("rfd", self.rfd, RFD_MODES)):
            if value not in options:
                raise ValueError(f"{name} must be one of {options}, got {value!r}")
        for name in ("epochs", "iters_per_epoch", "batch_size", "latent_dim", "eval_batch_size", "checkpoint_every"):
            check_int(getattr(self, name), name, 1)
        check_int(self.seed, "seed")
        check_int(self.warmup_epochs, "warmup_epochs")
        for name in ("lr_s", "lr_g", "temperature", "rfd_tau", "gdfq_bns_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name, high in (("momentum", 1.0), ("weight_decay", math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < high:
                raise ValueError(f"{name} must be a number in [0, {high}), got {value!r}")
        if not isinstance(self.inundation, bool):
            raise ValueError(f"inundation must be True or False, got {self.inundation!r}")
        if (not all(isinstance(m, int) and not isinstance(m, bool) for m in self.lr_milestones)
                or list(self.lr_milestones) != sorted(set(self.lr_milestones))):
            raise ValueError(f"lr_milestones must be increasing epochs (ints), got {self.lr_milestones!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs} (epochs={self.epochs})")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (batch statistics)")
        for name, low, low_open in (("akt_alpha", 0.0, False), ("lr_gamma", 0.0, True)):
            value = getattr(self, name)  # lr_gamma also decays gradient inundation's threshold: a factor <= 1
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    low < value <= 1.0 if low_open else low <= value <= 1.0):
                raise ValueError(f"{name} must be a number in {'(' if low_open else '['}0, 1], got {value!r}")
        if not 0.0 < self.gi_threshold < 1.0:
            raise ValueError(f"gi_threshold must be in (0, 1), got {self.gi_threshold}")
        check_count(self.eval_subset, "eval_subset", 1)  # test images

    @property
    def quant_config(self) -> QuantConfig:
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits, range_update=self.range_update)

    @property
    def total_iters(self) -> int:
        return self.epochs * self.iters_per_epoch

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_teacher(config: ZSQConfig) -> tuple[str, nn.Module]:
    """The teacher named by ``config.teacher`` (``"auto"``: the book's teacher for the dataset)."""
    from .models import TEACHERS, TeacherUnavailableError, load_teacher

    if config.teacher != "auto":
        return config.teacher, load_teacher(config.teacher)
    candidates = {"cifar10": ["resnet20_cifar10"], "cifar100": ["resnet20_cifar100"],
                  "cifar10-jpeg": ["resnet20_cifar10-jpeg", "akamaster_resnet20_cifar10"]}[config.dataset]
    errors = []
    for name in candidates:
        if name not in TEACHERS:
            continue
        try:
            return name, load_teacher(name)
        except TeacherUnavailableError as e:
            errors.append(f"{name}: {e}")
    raise TeacherUnavailableError("no teacher available for " + config.dataset + ":\n" + "\n".join(errors))


def cuda_auto_mode(config: ZSQConfig) -> str:
    """What ``fast="auto"`` runs on CUDA for ``config``: CUDA graphs for every row but gradient
    inundation, whose compiled update is not one graph (``fullgraph=False``) and keeps ``"compile"``.

    Graphs were timed and checked against eager on the AKT step (``akt_lib.fast``); the GDFQ and
    AdaDFQ rows run the same ``_Run`` step with other loss terms and are not checked on their own yet
    (``python -m akt_lib fastcheck <row> --bits <bits>`` does it on a GPU; ``fast="compile"`` avoids
    graphs).

    Examples:
        >>> cuda_auto_mode(ZSQConfig(rfd="released")), cuda_auto_mode(ZSQConfig(inundation=True, weight_decay=0.0))
        ('cudagraphs', 'compile')
    """
    return "compile" if config.inundation else "cudagraphs"


class _Run:
    """The state of one run (models, optimizers, RNG) and its two steps."""

    def __init__(self, config: ZSQConfig, teacher: nn.Module, device: torch.device, fast: str = "off"):
        c = self.config = config
        self.device = device
        self.fast = resolve_fast(fast, device, cuda_auto=cuda_auto_mode(c))
        self.num_classes = check_dataset(c.dataset).num_classes
        torch.manual_seed(c.seed)
        self.teacher = teacher.to(device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        out_features = _num_outputs(self.teacher, device)
        if out_features != self.num_classes:
            raise ValueError(f"teacher has {out_features} outputs but {c.dataset} has {self.num_classes} classes")
        self.student = quantize_model(self.teacher, c.quant_config).to(device).eval()
        for p in self.student.parameters():
            p.requires_grad_(True)
        self.generator = GDFQGenerator(self.num_classes, latent_dim=c.latent_dim).to(device).train()
        self.rng = torch.Generator(device=device).manual_seed(c.seed + 1)
        self.bn_tap = BNStatsTap(self.teacher)
        use_rfd = c.rfd in _RFD_ON
        self.t_feats = FeatureTap(self.teacher, detach=True) if use_rfd else None
        self.s_feats = FeatureTap(self.student) if use_rfd else None

        # The fast path on CUDA uses the fused (one-kernel) Adam/SGD: the same update arithmetic.
        fused = fused_kwargs(self.fast, device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=c.lr_g, betas=c.g_betas, **fused)
        if c.inundation:
            # Conv/FC weights get gradient inundation; BN parameters and biases plain Nesterov SGD.
            self.opt_s = GradientInundationSGD(inundation_param_groups(self.student), lr=c.lr_s,
                                               momentum=c.momentum, threshold=c.gi_threshold,
                                               weight_decay=c.weight_decay)
        else:
            self.opt_s = torch.optim.SGD(self.student.parameters(), lr=c.lr_s, momentum=c.momentum,
                                         nesterov=True, weight_decay=c.weight_decay, **fused)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, list(c.lr_milestones), c.lr_gamma)
        self.sched_s = torch.optim.lr_scheduler.MultiStepLR(self.opt_s, list(c.lr_milestones), c.lr_gamma)

        # The fast path compiles the two forward + loss functions below (and GI's update); the
        # eager path calls them as they are. ``fast == "auto"`` falls back to eager on failure.
        fallback = fast == "auto"
        self.generator_forward = compile_step(self._generator_forward, self.fast, "the generator step", fallback)
        self.student_forward = compile_step(self._student_forward, self.fast, "the student step", fallback)
        self.student_update = (compile_step(self.opt_s.step, self.fast, "gradient inundation", fallback,
                                            fullgraph=False) if c.inundation else self.opt_s.step)

    # --- one iteration -------------------------------------------------------------------------
    def step(self, train_student: bool) -> dict[str, torch.Tensor]:
        c = self.config
        mark_step_begin(self.fast)
        z, y = sample_latent(c.batch_size, self.num_classes, c.latent_dim, generator=self.rng, device=self.device)

        # CUDA-graph outputs live in a memory pool that the next graph function reuses: once the
        # student step's graph runs, the generator step's outputs are overwritten (pytorch/pytorch
        # #160281), and the next iteration overwrites the student step's. Keep copies of what is
        # read after that point.
        keep = (lambda t: t.detach().clone()) if self.fast == "cudagraphs" else (lambda t: t.detach())

        # Generator step: one Adam step of G on the generator loss.
        x, t_logits, t_feats, loss_g, bns, diag = self.generator_forward(z, y)
        x, t_logits = keep(x), keep(t_logits)
        if self.fast == "cudagraphs":  # the feature tap detaches already: only the copy is needed
            t_feats = tuple(f.clone() for f in t_feats)
        stats = {"loss_g": keep(loss_g), "bns": keep(bns), **{k: keep(v) for k, v in zip(self.diag_keys, diag)}}
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        stats["grad_g"] = _grad_norm(self.generator.parameters())
        self.opt_g.step()

        # Student step on the same images, detached from G. Its forward also calibrates the
        # activation ranges during warm-up (the GDFQ mechanism), so it runs even when not training.
        loss_s, rfd, agree = self.student_forward(x, t_logits, y, t_feats)
        stats.update(loss_s=keep(loss_s), rfd=keep(rfd), agree=keep(agree))  # before any later graph runs
        grad_s = torch.zeros((), device=self.device)
        if train_student:
            self.opt_s.zero_grad(set_to_none=True)
            loss_s.backward()
            grad_s = _grad_norm(self.student.parameters())
            self.student_update()
        stats["grad_s"] = grad_s
        return stats

    @property
    def diag_keys(self) -> tuple[str, ...]:
        """The names of the generator step's diagnostics (``_generator_forward``'s last output)."""
        return ("ce_t",) + (ADADFQ_DIAGNOSTIC_KEYS if self.config.generator_loss == "adadfq" else ())

    def _generator_forward(self, z: torch.Tensor, y: torch.Tensor):
        """Images and the generator loss: ``(x, t_logits, t_feats, loss_g, bns, diag)``.

        The teacher's BN inputs (and, for RFD, its unit features) are recorded by hooks during
        its forward; ``t_feats`` is a tuple of detached copies for the student step (empty
        without RFD). ``diag``: the detached diagnostics named by ``diag_keys``.
        """
        c = self.config
        x = self.generator(z, y)  # (N, 3, 32, 32), normalised-input space
        t_logits = self.teacher(x)
        bns = bns_loss(self.bn_tap)
        ce_t = F.cross_entropy(t_logits.detach(), y)
        if c.generator_loss == "gdfq":
            loss_g = L.gdfq_generator_loss(t_logits, y, bns, bns_weight=c.gdfq_bns_weight)
            diag = (ce_t,)
        else:  # AdaDFQ: the student also judges the generated images (and calibrates on them)
            s_logits_g = self.student_judges(x)
            loss_g, parts = L.adadfq_generator_loss(t_logits, s_logits_g, y, bns, return_parts=True)
            diag = (ce_t, parts["margin"], parts["ds"], parts["as"])
        t_feats = tuple(self.t_feats.features) if self.t_feats is not None else ()
        return x, t_logits, t_feats, loss_g, bns, diag

    def student_judges(self, x: torch.Tensor) -> torch.Tensor:
        """The student's logits on ``x`` for the generator loss, differentiable in ``x`` only.

        The generator step must not train the student, and in the reference its weight gradient
        is computed and then thrown away (the student step zeroes it first). Running the student
        on detached copies of its parameters gives the same logits and the same gradient for the
        images while skipping the weight-gradient convolutions (eager and compiled alike: a
        compiled backward computes a gradient for every input that requires one). Buffers and
        hooks are the student's own, so the activation ranges still calibrate here.
        """
        params = {name: p.detach() for name, p in self.student.named_parameters()}
        return torch.func.functional_call(self.student, params, (x,))

    def _student_forward(self, x: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor,
                         t_feats: tuple[torch.Tensor, ...]):
        """The student's forward on ``x`` and its loss: ``(loss_s, rfd, agree)``, where ``agree`` is the %
        of the images on which the student's top class is the teacher's (a diagnostic)."""
        s_logits = self.student(x)
        agree = (s_logits.detach().argmax(1) == t_logits.argmax(1)).float().mean() * 100.0
        return *self.student_loss(s_logits, t_logits, y, t_feats), agree

    def student_loss(self, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                     t_feats: tuple[torch.Tensor, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """The host method's student loss, with AKT's RFD mixed in when enabled; returns (loss, rfd)."""
        c = self.config
        if c.student_loss == "gdfq":
            host = L.gdfq_student_loss(s, t, y, T=c.temperature)
        elif c.student_loss == "ait":
            host = L.ait_student_loss(s, t, T=c.temperature)
        else:
            host = L.adadfq_student_loss(s, t, T=c.temperature)
        if c.rfd not in _RFD_ON:
            # "off", and "released-zero": the released AKT trainer's RFD is computed on emptied
            # feature lists, i.e. it is exactly 0 (methods.md §2a'), so only the host loss trains.
            return host, torch.zeros((), device=s.device)
        # Teacher features of the *same* images, kept (detached) from the generator step. §2a:
        # L_KL + 1000·RFD ("released"; the ×1000 is inside rfd_loss), or α·RFD + (1 − α)·L_KL ("averaged").
        rfd = L.rfd_loss(self.s_feats.features, list(t_feats), tau=c.rfd_tau, form=c.rfd)
        return L.mix_rfd(host, rfd, c.rfd, c.akt_alpha), rfd

    def remove_hooks(self) -> None:
        for tap in (self.bn_tap, self.t_feats, self.s_feats):
            if tap is not None:
                tap.remove()

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"student": self.student.state_dict(), "generator": self.generator.state_dict(),
                "opt_s": self.opt_s.state_dict(), "opt_g": self.opt_g.state_dict(),
                "sched_s": self.sched_s.state_dict(), "sched_g": self.sched_g.state_dict(),
                "rng": self.rng.get_state(), "torch_rng": torch.get_rng_state(),
                "act_frozen": [m.frozen for m in _acts(self.student)]}

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.generator.load_state_dict(state["generator"])
        self.opt_s.load_state_dict(state["opt_s"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_s.load_state_dict(state["sched_s"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.rng.set_state(state["rng"].cpu())  # generator states are CPU byte tensors, CUDA generators too
        torch.set_rng_state(state["torch_rng"].cpu())
        if all(state["act_frozen"]):
            freeze_act_ranges(self.student)
        else:
            unfreeze_act_ranges(self.student)


def _grad_norm(params) -> torch.Tensor:
    """The 2-norm of all of ``params``' gradients together, on their device (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _acts(model: nn.Module):
    from .quant import act_quantizers

    return list(act_quantizers(model))


@torch.no_grad()
def _num_outputs(model: nn.Module, device: torch.device) -> int:
    was = model.training
    model.eval()
    out = model(torch.zeros(2, 3, 32, 32, device=device)).shape[-1]
    model.train(was)
    return out


def _paths(out_dir: Path, config: ZSQConfig, name: str) -> tuple[Path, Path]:
    stem = f"{name}-{config.dataset}-seed{config.seed}-{config.profile}"
    return out_dir / f"{stem}.json", out_dir / "checkpoints" / f"{stem}.pt"


def kept_checkpoint(ckpt_path: str | Path, epoch: int) -> Path:
    """Where ``train_zsq(keep_epochs=...)`` keeps a run's checkpoint from the end of ``epoch``.

    Examples:
        >>> kept_checkpoint("out/checkpoints/akt-w4a4-cifar10-jpeg-seed0-paper.pt", 7).name
        'akt-w4a4-cifar10-jpeg-seed0-paper-epoch007.pt'
    """
    ckpt_path = Path(ckpt_path)
    return ckpt_path.with_name(f"{ckpt_path.stem}-epoch{epoch:03d}.pt")


def load_run(ckpt_path: str | Path, teacher: nn.Module | None = None, device: str | torch.device = "cpu") -> "_Run":
    """A run rebuilt from one of its checkpoints (``train_zsq``'s own or a kept one), for inspection.

    For looking at a run after the fact: its generator (``run.generator``, e.g. with
    ``generator.sample_latent`` for images), student (activation ranges as checkpointed), teacher
    and loss functions, as they were at ``run.iteration``. The run is eager (``fast="off"``, plain
    optimizers even if a CUDA run used fused ones). Stepping it is not a continuation of the
    training: the per-epoch settings (ranges unfrozen in warm-up, AIT's inundation schedule) are
    ``train_zsq``'s; resume with ``train_zsq(..., resume=True)`` for that. The checkpoint may come
    from another device (a GPU run read on a CPU); the latent RNG then restarts from the config's
    seed (CUDA and CPU generators differ). The caller's global torch RNG is left as it was.

    Args:
        ckpt_path: a ``.pt`` file written by ``train_zsq``.
        teacher: the float teacher (default: the one the checkpoint names, checked by its hash).
        device: where to put the run.
    """
    state = load_checkpoint(ckpt_path, map_location="cpu")
    config = ZSQConfig(**{**state["config"], "g_betas": tuple(state["config"]["g_betas"]),
                          "lr_milestones": tuple(state["config"]["lr_milestones"])})
    device = torch.device(device)
    _, teacher, _ = resume_teacher(state, ckpt_path, teacher, lambda: resolve_teacher(config))
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # _Run seeds, and its state sets, the global RNG
        run = _Run(config, copy.deepcopy(teacher), device, fast="off")
        run_state = dict(state["run"])
        if state["device_type"] != device.type:
            run_state["rng"] = torch.Generator(device=device).manual_seed(config.seed + 1).get_state()
        run.load_state_dict(run_state)
    for opt in (run.opt_g, run.opt_s):  # a CUDA run's saved param groups say fused=True
        for group in opt.param_groups:
            if group.get("fused"):
                group["fused"] = None
    run.iteration = state["iteration"]
    return run


def train_zsq(config: ZSQConfig, name: str = "zsq", out_dir: str | Path | None = None,
              teacher: nn.Module | None = None, resume: bool = True, progress: bool = True,
              device: str | torch.device | None = None, time_budget_s: float | None = None,
              stop_after_iters: int | None = None, fast: str = "auto",
              tags: dict | None = None, stop_on_nonfinite: bool = True,
              keep_epochs: Iterable[int] = ()) -> tuple[nn.Module, dict]:
    """Train a zero-shot quantized student; return ``(student, record)``.

    Args:
        config: a ``ZSQConfig``.
        name: the experiment name (file names and the record).
        out_dir: where the JSON record (and ``checkpoints/``) go; ``None`` keeps nothing on disk.
        teacher: a float teacher module (default: ``config.teacher`` resolved by name).
        resume: continue from this run's checkpoint if one exists.
        progress: show a tqdm bar.
        device: default ``akt_lib.utils.get_device()``.
        time_budget_s: stop (after writing a checkpoint) once this much wall time has passed.
        stop_after_iters: stop (after writing a checkpoint) at this global iteration (tests).
        fast: ``akt_lib.fast`` mode: ``"auto"`` (on CUDA: CUDA graphs, compiled for GDFQ+AIT; eager
            elsewhere), ``"off"`` (the eager reference), ``"compile"`` or ``"cudagraphs"``. Recorded
            as ``record["fast"]``.
        tags: extra record fields, e.g. ``{"experiment": "adadfq+akt", "bits": "w3a3"}`` (written with
            the first record, so a stopped run's record carries them too).
        stop_on_nonfinite: finish the run at the end of an epoch whose mean losses are not finite
            (``record["diverged"]`` says where; ``records.mark_diverged``). The check reads the
            epoch's means, which the history needs anyway: no extra host sync. ``False`` runs the
            schedule to its end as the reference does, through NaN.
        keep_epochs: epochs whose end-of-epoch checkpoint is also kept as
            ``checkpoints/<run>-epoch<E>.pt`` (the run's own checkpoint is overwritten as it goes),
            for looking at a run's state after the fact: ``load_run`` rebuilds it, e.g. to see the
            generator's images in the epochs before a collapse. Needs ``out_dir``.

    Returns:
        The student (frozen ranges, eval mode) and the record (``status`` is ``"complete"`` or
        ``"stopped"`` when a budget ended the run early).
    """
    from tqdm.auto import tqdm

    if not isinstance(config, ZSQConfig):
        raise TypeError(f"config must be a ZSQConfig, got {type(config).__name__}")
    time_budget_s = check_seconds(time_budget_s)
    stop_after_iters = check_count(stop_after_iters, "stop_after_iters")
    keep_epochs = set(keep_epochs)
    if not all(isinstance(e, int) and 0 <= e < config.epochs for e in keep_epochs):
        raise ValueError(f"keep_epochs must be epochs in [0, {config.epochs}), got {sorted(keep_epochs, key=str)}")
    if keep_epochs and out_dir is None:
        raise ValueError("keep_epochs needs out_dir: the kept checkpoints are files beside the run's own")
    device = get_device(device) if not isinstance(device, torch.device) else device
    record_path, ckpt_path = _paths(Path(out_dir), config, name) if out_dir is not None else (None, None)
    state = None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        # On the CPU: RNG states must stay there; weights and optimizer state move to the device
        # when loaded into the run.
        state = load_checkpoint(ckpt_path, map_location="cpu")
        if state["config"] != config.to_dict():
            raise ValueError(f"checkpoint {ckpt_path} was written with a different config; "
                             "delete it or pass resume=False")
        if state.get("device_type", device.type) != device.type:
            raise ValueError(f"checkpoint {ckpt_path} was written on {state['device_type']}, this run is on "
                             f"{device.type}: resume it there, or pass resume=False to start again")

    teacher_name, teacher, teacher_sha = resume_teacher(state, ckpt_path, teacher, lambda: resolve_teacher(config))
    teacher = copy.deepcopy(teacher)
    run = _Run(config, teacher, device, fast=fast)

    images, labels = load_split(config.dataset, "test")
    if config.eval_subset is not None:
        idx = fixed_subset(config.eval_subset, len(labels), seed=0)
        images, labels = images[idx], labels[idx]

    start_iter, record, loss_sums, loss_count, epoch_train_s = 0, None, None, 0, 0.0
    keys = stat_keys(config)
    partial: list[str] = []  # keys whose sums in this epoch miss the iterations before a resume
    if state is not None:
        run.load_state_dict(state["run"])
        start_iter, record = state["iteration"], state["record"]
        if record.get("status") == "complete":  # nothing to do: the finished run, its record untouched
            run.remove_hooks()
            return run.student, record
        loss_sums, loss_count = state.get("loss_sums"), state.get("loss_count", 0)
        loss_sums = loss_sums.to(device) if loss_sums is not None else None
        partial = list(state.get("loss_partial", []))
        epoch_train_s = state.get("epoch_train_s", 0.0)  # older checkpoints: this segment's time only
        if loss_sums is not None and loss_sums.numel() < len(keys):
            # A checkpoint from before grad_s or the diagnostics were logged (they come after the
            # older keys): their sums for this epoch lack the iterations before the resume, so the
            # epoch's history entry says None for them rather than a mean that is not one.
            partial += list(keys[loss_sums.numel():])
            loss_sums = torch.cat([loss_sums, loss_sums.new_zeros(len(keys) - loss_sums.numel())])
    if record is None:
        record = new_record("zsq", name, config.dataset, config.to_dict(), config.seed, config.profile, device)
        record["teacher"] = teacher_name
        record["teacher_sha256"] = teacher_sha
        record["teacher_acc"] = evaluate(run.teacher, images, labels, config.dataset, config.eval_batch_size)
        record["method"] = _method_label(config)
        record["loss_stat"] = "mean over the epoch's iterations"
        record.update(tags or {})
    record_fast_mode(record, run.fast)
    start_segment(record, device, run.fast, start_iter)
    wall0, t0 = record["wall_time_s"], time.perf_counter()
    t_epoch = t0  # this epoch's training time: epoch_train_s (before a resume) + now - t_epoch
    compiled = (run.generator_forward, run.student_forward, run.student_update)

    def save(iteration: int, status: str, keep_as: Path | None = None) -> None:
        record["wall_time_s"] = wall0 + time.perf_counter() - t0
        record["status"] = status
        record_fallbacks(record, *compiled)
        if ckpt_path is not None:
            mid_epoch = iteration % config.iters_per_epoch != 0
            if mid_epoch and device.type == "cuda":  # the epoch's time so far counts its queued steps too
                torch.cuda.synchronize(device)
            ckpt = {"config": config.to_dict(), "device_type": device.type, "run": run.state_dict(),
                    "iteration": iteration, "record": record, "loss_sums": loss_sums, "loss_count": loss_count,
                    "loss_partial": partial,
                    "epoch_train_s": epoch_train_s + time.perf_counter() - t_epoch if mid_epoch else 0.0}
            if keep_as is not None:  # first: a crash before the run's own checkpoint redoes (and keeps) the epoch
                save_checkpoint(ckpt, keep_as)
            save_checkpoint(ckpt, ckpt_path)
        if record_path is not None:
            save_record(record, record_path)

    c = config
    bar = tqdm(total=c.total_iters, initial=start_iter, disable=not progress, desc=name, leave=False)
    it = start_iter
    old_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick its kernels
    stopped = False
    with StopOnSignal() as signals:  # SIGTERM (a runner or `timeout` ending the command): stop cleanly
        try:
            while it < c.total_iters:
                epoch, i_in_epoch = divmod(it, c.iters_per_epoch)
                warm = epoch < c.warmup_epochs
                # An epoch's Python-side settings, at its start and again after resuming mid-epoch (the
                # inundation cap is not part of any state_dict).
                if i_in_epoch == 0 or it == start_iter:
                    if warm:
                        unfreeze_act_ranges(run.student)
                    if c.inundation:
                        run.opt_s.set_threshold(threshold_at_epoch(epoch, c.gi_threshold, c.lr_milestones, c.lr_gamma))
                        # AIT caps the scale search during warm-up and one epoch beyond (§3a).
                        run.opt_s.cap_scale = scale_cap_at_epoch(epoch, c.warmup_epochs)
                stats = run.step(train_student=not warm)
                # The epoch's losses are summed on the device (no host sync per iteration) and
                # averaged into the history at the epoch's end.
                step_losses = torch.stack([stats[k] for k in keys])
                if i_in_epoch == 0 or loss_sums is None:
                    loss_sums, loss_count = step_losses, 0
                else:
                    loss_sums = loss_sums + step_losses
                loss_count += 1
                it += 1
                bar.update(1)
                if it % c.iters_per_epoch == 0:  # end of an epoch: freeze, evaluate, schedule
                    freeze_act_ranges(run.student)
                    # The means' .tolist() waits for the epoch's steps (queued on a GPU), so train_s
                    # is their time, not the time to queue them.
                    means = (loss_sums / loss_count).tolist()
                    means = {k: None if k in partial else m for k, m in zip(keys, means)}
                    t_eval = time.perf_counter()
                    acc = evaluate(run.student, images, labels, c.dataset, c.eval_batch_size)
                    record["history"].append({"epoch": epoch, "iteration": it, "acc": acc, "warmup": warm,
                                              "lr_s": run.opt_s.param_groups[0]["lr"], **means,
                                              "train_s": epoch_train_s + t_eval - t_epoch,
                                              "eval_s": time.perf_counter() - t_eval})
                    loss_sums, loss_count, partial, epoch_train_s = None, 0, [], 0.0
                    run.sched_g.step()
                    with warnings.catch_warnings():
                        # During warm-up the student optimizer has not stepped yet; the reference steps
                        # both schedules every epoch regardless, and so do we.
                        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                        run.sched_s.step()
                    bar.set_postfix(acc=f"{acc:.2f}", best=f"{max(h['acc'] for h in record['history']):.2f}")
                    if stop_on_nonfinite and mark_diverged(record, LOSS_KEYS):  # NaN weights from here on
                        break
                    save(it, "running", kept_checkpoint(ckpt_path, epoch) if epoch in keep_epochs else None)
                    t_epoch = time.perf_counter()  # the next epoch starts (the checkpoint's time is in neither)
                elif it % c.checkpoint_every == 0:
                    save(it, "running")
                if (stop_after_iters is not None and it >= stop_after_iters) or signals.requested or \
                        (time_budget_s is not None and time.perf_counter() - t0 > time_budget_s and it < c.total_iters):
                    stopped = it < c.total_iters
                    break
        except Exception as e:  # the record says so (a crashed run is not "running"); the checkpoint stays
            mark_failed(record, record_path, e)
            raise
        finally:
            torch.backends.cudnn.benchmark = old_benchmark
            bar.close()
    run.remove_hooks()
    if stopped:
        save(it, "stopped")
        return run.student, record
    finish_record(record)
    record["drop_best"] = record["teacher_acc"] - record["best_acc"]
    record["drop_final"] = record["teacher_acc"] - record["final_acc"]
    save(it, "complete")
    return run.student, record


def _method_label(c: ZSQConfig) -> str:
    base = {"gdfq": "GDFQ", "adadfq": "AdaDFQ"}[c.generator_loss]
    parts = [base]
    if c.student_loss == "ait" or c.inundation:
        parts.append("AIT")
    if c.rfd == "released":
        parts.append("AKT")
    if c.rfd == "averaged":
        parts.append(f"AKT(averaged RFD, α={c.akt_alpha:g})")
    if c.rfd == "released-zero":
        parts.append("RFD=0 (released code)")
    return "+".join(parts)


def smoke_config(**overrides) -> ZSQConfig:
    """A CPU-seconds configuration for tests and live cells (same code path, tiny sizes)."""
    base = ZSQConfig(epochs=3, iters_per_epoch=2, warmup_epochs=1, batch_size=8, eval_subset=64,
                     lr_milestones=(2,), checkpoint_every=1, profile="smoke")
    return replace(base, **overrides)
