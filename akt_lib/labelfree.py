"""Label-free quantization-aware distillation on real training images: SQAKD and FAQD (chapters 6–7).

Both methods train a quantized student on the real CIFAR training images **without their labels**:
the only target is a full-precision teacher looking at the same (augmented) images
(methods.md §4, §5). ``train_labelfree(config)`` runs either recipe:

* ``recipe="sqakd"`` (§4a): student = quantized copy of the FP teacher (``quantize_model_qat``:
  EWGS / PACT / LSQ / DoReFa, initialised on one training batch with ``init_qat_model``), loss
  ``T²·KL`` (T = 4), Adam lr 1e-3 (wd 1e-4) for the model + lr 1e-5 for the EWGS intervals and
  output scales (methods.md gives that group no weight decay: 0; PACT's clip level and LSQ's step,
  which SQAKD ran on Tiny-ImageNet with one optimizer, train with the model), cosine to 0, 1200
  epochs at batch 256; EWGS ``delta`` from a Hessian trace every 10 epochs (first at epoch 10) when
  ``ewgs_delta="hessian"``; ``"zero"`` is what the released code runs.
* ``recipe="faqd"`` (§5a, the ``_full`` scripts): ResNet-20 student ← ResNet-110 teacher,
  ``quantize_model_faqd``, loss ``KD + 0.1·Σ_stages FA(adapter(f_s), f_t)`` (KD: logit MSE, or
  ``T²·KL`` summed, T = 5; FA or FFA; ``fa_type="none"`` = logit-only), a trained 1×1 adapter,
  SGD Nesterov 0.9 lr 0.01 wd 1e-4 (ReLU steps ``alpha``: wd 1e-6), cosine over 200 epochs,
  batch 100, grad-norm clip 20. The student starts from random weights, as the reference does by
  default (its ``--fine_tuning`` flag loads a pretrained *quantized* student instead, §5a);
  ``student_init="auto"`` starts it from an FP ResNet-20 (the dataset's shipped one, else
  akamaster's on CIFAR-10), as SQAKD and QAT in general do.

Labels: a label-free run loads the training **images only** (``load_train_images``); its batches
are image tensors, so no code path of the loop can reach a label. The "quantizer without SQAKD"
baselines are a separate, explicit mode: ``loss="ce"`` loads labels through
``load_train_labelled`` and trains with cross-entropy (SQAKD's ``kd_gamma = 1``).

The student trains in ``train()`` mode (BatchNorm on batch statistics, updating its running
ones: ordinary QAT; methods.md notes no eval-mode BN for either method, unlike the zero-shot
trainers); the teacher stays in ``eval()`` under ``no_grad``. The training set sits on the
device as uint8, batches are cropped and flipped there (``akt_lib.augment``). The arithmetic is
float32, as in both references; ``amp=True`` adds bf16 autocast on CUDA, a speed variant that no
reference has (methods.md §8 (ii)): the quantizers would then round bf16 values, so activations
near a rounding boundary land on another level. Its records say so (``amp_dtype``, the method
label), and the results tables leave them out. Test accuracy after every
epoch (best *and* final recorded); atomic checkpoints every epoch and whenever a
``time_budget_s`` / ``stop_after_iters`` stop comes, mid-epoch included; resuming is bit-exact on
the CPU. Not done: SQAKD's extra full-train-set evaluation each epoch (it needs labels and only
logs), and SQAKD's BatchNorm1d before the classifier (our ResNets have none).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .augment import random_crop_flip
from .data import check_dataset, fixed_subset, load_split, normalize
from .evaluate import evaluate
from .fast import (compile_step, fused_kwargs, mark_step_begin, record_fallbacks, record_fast_mode,
                   resolve_fast)
from .faqd import FAQDConfig, FeatureAdapter, QuantReLU, fa_loss, ffa_loss, logit_mse_loss
from .features import FeatureTap
from .models import ARCHS, TEACHERS, CIFARResNet, ResNetA, TeacherUnavailableError, build_model, load_teacher
from .qat import QAT_METHODS, IntervalQuantizer, QATConfig, QATConv2d, init_qat_model, sqakd_kl_loss, update_ewgs_deltas
from .quant import quantize_model
from .records import (StopOnSignal, finish_record, load_checkpoint, mark_diverged, mark_failed, new_record,
                      resume_teacher, save_checkpoint, save_record, start_segment)
from .teacher import check_teacher_classes
from .utils import check_count, check_int, check_seconds, get_device, seed_everything

__all__ = ["LabelFreeConfig", "RECIPES", "PROFILES", "SMOKE", "QUANTIZERS", "LOSSES", "LOSS_KEYS", "load_train_images",
           "load_train_labelled", "teacher_candidates", "resolve_teacher", "resolve_student_init", "train_labelfree"]

QUANTIZERS = QAT_METHODS + ("faqd",)
LOSSES = ("sqakd_kl", "faqd", "ce")  # "ce" = the supervised baseline: the only mode that loads labels
#: The epoch means a run's history keeps of its losses (``kd``, ``fa``: the parts; 0 where unused).
LOSS_KEYS = ("loss", "kd", "fa")
KD_LOSSES, FA_TYPES, OPTIMIZERS = ("mse", "kl"), ("fa", "ffa", "none"), ("adam", "sgd")
PROFILES = ("smoke", "short", "paper")

#: Each recipe's paper schedule, over the dataclass defaults (which are SQAKD's, §4a).
RECIPES: dict[str, dict] = {
    "sqakd": {},
    "faqd": dict(quantizer="faqd", loss="faqd", kd_T=5.0, epochs=200, batch_size=100, optimizer="sgd", lr=0.01,
                 lr_q=None, weight_decay=1e-4, weight_decay_q=1e-6, grad_clip=20.0, student_init="scratch"),
}
#: The ``smoke`` profile: CPU seconds, same code path. ``short`` = a tenth of the paper's epochs.
SMOKE: dict = dict(epochs=2, batch_size=32, train_size=256, test_size=64, eval_batch_size=64,
                   ewgs_num_batches=1, ewgs_hutchinson_iters=2)


@dataclass(frozen=True)
class LabelFreeConfig:
    """One label-free run; defaults are SQAKD's CIFAR-10 ResNet-20 recipe (§4a). Chapter 6.

    Use ``LabelFreeConfig.from_profile(profile, recipe, **overrides)`` for FAQD's recipe and the
    smaller profiles. Fields: what is trained (``dataset``, student ``arch``, ``teacher`` — a
    ``TEACHERS`` name or ``"auto"``, ``student_init`` — ``"auto"``, ``"scratch"`` or a
    ``TEACHERS`` name); the quantizer (``quantizer`` in ``QUANTIZERS``, bits, EWGS options); the
    loss (``loss`` in ``LOSSES``, ``kd_T``, FAQD's ``kd_loss``/``kd_coef``/``fa_type``/
    ``fa_coef``/``ffa_projections``/``train_adapter``; ``faqd_alpha_grad``: ``"paper"``, or
    ``"released"`` for FAQD's ReLU steps fixed at their initial values as in the released scripts,
    ``faqd.ALPHA_GRADS``); the schedule (``lr_q``/``weight_decay_q``
    apply to quantizer parameters, ``lr_q=None`` meaning ``lr``; cosine over ``epochs``);
    bookkeeping (``train_size``/``test_size``: fixed subsets, ``None`` = all).

    Examples:
        >>> c = LabelFreeConfig.from_profile("short", recipe="faqd", w_bits=2, a_bits=2)
        >>> (c.epochs, c.batch_size, c.optimizer, c.quant_config.name, c.supervised)
        (20, 100, 'sgd', 'w2a2', False)
    """

    recipe: str = "sqakd"
    dataset: str = "cifar10-jpeg"
    arch: str = "resnet20"
    teacher: str = "auto"
    student_init: str = "auto"
    quantizer: str = "ewgs"
    w_bits: int = 4
    a_bits: int = 4
    ewgs_delta: str | float = "hessian"
    ewgs_update_every: int = 10  # epochs
    ewgs_num_batches: int = 3
    ewgs_hutchinson_iters: int = 50
    loss: str = "sqakd_kl"
    kd_T: float = 4.0
    kd_loss: str = "mse"
    kd_coef: float = 1.0
    fa_type: str = "fa"
    fa_coef: float = 0.1
    ffa_projections: int = 15
    train_adapter: bool = True
    faqd_alpha_grad: str = "paper"
    epochs: int = 1200
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_q: float | None = 1e-5
    weight_decay: float = 1e-4
    weight_decay_q: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    grad_clip: float | None = None
    amp: bool = False
    train_size: int | None = None
    test_size: int | None = None
    eval_batch_size: int = 200
    seed: int = 0
    profile: str = "paper"

    def __post_init__(self):
        check_dataset(self.dataset)
        for name, value, options in (("recipe", self.recipe, tuple(RECIPES)), ("arch", self.arch, tuple(ARCHS)),
                                     ("quantizer", self.quantizer, QUANTIZERS), ("loss", self.loss, LOSSES),
                                     ("kd_loss", self.kd_loss, KD_LOSSES), ("fa_type", self.fa_type, FA_TYPES),
                                     ("optimizer", self.optimizer, OPTIMIZERS), ("profile", self.profile, PROFILES),
                                     ("teacher", self.teacher, ("auto", *TEACHERS)),
                                     ("student_init", self.student_init, ("auto", "scratch", *TEACHERS))):
            if value not in options:
                raise ValueError(f"{name} must be one of {', '.join(map(str, options))}; got {value!r}")
        if self.faqd_alpha_grad != "paper" and self.quantizer != "faqd":
            raise ValueError(f"faqd_alpha_grad={self.faqd_alpha_grad!r} applies to quantizer='faqd' only, "
                             f"got quantizer={self.quantizer!r}")
        self.quant_config  # noqa: B018 - validates the bits and EWGS options through the family's config
        for name in ("ewgs_num_batches", "ewgs_hutchinson_iters", "ffa_projections", "epochs", "batch_size",
                     "eval_batch_size"):
            check_int(getattr(self, name), name, 1)
        for name in ("train_size", "test_size"):  # None: the whole split
            check_count(getattr(self, name), name, 1)
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (the student's BatchNorm trains on batch statistics)")
        for name in ("kd_T", "lr", "lr_q", "grad_clip"):
            v = getattr(self, name)
            if not (v is None and name in ("lr_q", "grad_clip")) and not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name} must be a positive number{' or None' if name != 'lr' else ''}, got {v!r}")
        for name in ("kd_coef", "fa_coef", "weight_decay", "weight_decay_q"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        check_int(self.seed, "seed")

    @classmethod
    def from_profile(cls, profile: str = "paper", recipe: str = "sqakd", **overrides) -> "LabelFreeConfig":
        """``recipe``'s paper schedule sized by ``profile`` (``smoke``/``short``/``paper``), then ``overrides``.

        Examples:
            >>> LabelFreeConfig.from_profile("short").epochs, LabelFreeConfig.from_profile("smoke").train_size
            (120, 256)
        """
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
        base = dict(RECIPES[recipe], recipe=recipe, profile=profile)
        if profile == "short":  # same per-epoch work and cosine shape, a tenth of the epochs
            base["epochs"] = max(1, cls(**base).epochs // 10)
        elif profile == "smoke":
            base.update(SMOKE)
        return cls(**{**base, **overrides})

    @property
    def quant_config(self) -> QATConfig | FAQDConfig:
        """The quantizer's own config (``quantize_model`` dispatches on its type)."""
        if self.quantizer == "faqd":
            return FAQDConfig(w_bits=self.w_bits, a_bits=self.a_bits, alpha_grad=self.faqd_alpha_grad)
        return QATConfig(method=self.quantizer, w_bits=self.w_bits, a_bits=self.a_bits,
                         ewgs_delta=self.ewgs_delta, ewgs_update_every=self.ewgs_update_every)

    @property
    def supervised(self) -> bool:
        """True only for the cross-entropy baseline, the one mode that loads labels."""
        return self.loss == "ce"

    def to_dict(self) -> dict:
        return asdict(self)


# --- data: images only, unless explicitly supervised ---------------------------------------------

def load_train_images(dataset: str, size: int | None = None) -> torch.Tensor:
    """The training images **without their labels**: ``(N, 3, 32, 32)`` uint8 (a fixed subset if ``size``).

    The label half of ``load_split`` is dropped right here, so a label-free run never holds one.
    """
    images = load_split(dataset, "train")[0]  # (N, 3, 32, 32) uint8; labels never leave load_split
    return images[_subset(size, len(images), "train_size")]


def load_train_labelled(dataset: str, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images **and labels** (same subset as ``load_train_images``): supervised baselines only."""
    images, labels = load_split(dataset, "train")
    idx = _subset(size, len(images), "train_size")
    return images[idx], labels[idx]


def _subset(size: int | None, total: int, name: str):
    if size is None:
        return slice(None)
    if size > total:
        raise ValueError(f"{name}={size} but the split has only {total} images")
    # fixed_subset, never a prefix: the CIFAR-10 (JPEG q75) files are sorted by class.
    return fixed_subset(size, total, seed=0)


# --- teachers and the student's starting point ---------------------------------------------------

def teacher_candidates(recipe: str, arch: str, dataset: str) -> list[str]:
    """``TEACHERS`` names ``teacher="auto"`` tries, in order (FAQD: ResNet-110; SQAKD: ``arch`` itself).

    Examples:
        >>> teacher_candidates("sqakd", "resnet20", "cifar10-jpeg")
        ['resnet20_cifar10-jpeg', 'akamaster_resnet20_cifar10']
    """
    names = [f"resnet110_{dataset}"] if recipe == "faqd" else [f"{arch}_{dataset}"]
    if recipe != "faqd" and arch == "resnet20" and dataset in ("cifar10", "cifar10-jpeg"):
        names.append("akamaster_resnet20_cifar10")  # the offline ResNet-20 (option-A, like SQAKD's)
    return names


def _load_first(names: list[str], what: str, hint: str) -> tuple[str, nn.Module]:
    errors = []
    for name in names:
        if name not in TEACHERS:
            errors.append(f"{name}: not a known teacher name")
            continue
        try:
            return name, load_teacher(name)
        except (TeacherUnavailableError, FileNotFoundError) as e:  # akamaster's loader: FileNotFoundError
            errors.append(f"{name}: {e}")
    raise TeacherUnavailableError(f"no {what} available:\n  " + "\n  ".join(errors) + f"\n{hint}")


def resolve_teacher(config: LabelFreeConfig) -> tuple[str, nn.Module]:
    """``(name, teacher)`` for ``config.teacher`` (``"auto"``: ``teacher_candidates``)."""
    if config.teacher != "auto":
        return config.teacher, load_teacher(config.teacher)
    arch = "resnet110" if config.recipe == "faqd" else config.arch
    return _load_first(teacher_candidates(config.recipe, config.arch, config.dataset),
                       f"{config.recipe.upper()} teacher ({arch}) for {check_dataset(config.dataset).display_name}",
                       f"Train one with `python -m akt_lib teacher --dataset {config.dataset} --arch {arch} "
                       "--profile fast` (a GPU run), or pass teacher=<module> to train_labelfree.")


def arch_of(model: nn.Module) -> str | None:
    """``"resnet20"`` etc. for the CIFAR ResNets of ``akt_lib.models``; ``None`` for anything else."""
    if isinstance(model, CIFARResNet):
        return f"resnet{model.depth}"
    if isinstance(model, ResNetA):
        return f"resnet{6 * len(model.layer1) + 2}"
    return None


def resolve_student_init(config: LabelFreeConfig, teacher: nn.Module, teacher_name: str) -> tuple[str, nn.Module]:
    """The FP model the student is quantized from: ``(name, model)``.

    ``"auto"``: the teacher itself when it has the student's ``arch`` (SQAKD), else the dataset's
    pretrained FP ``arch`` (a ResNet-20 under a ResNet-110 teacher); ``"scratch"``: random weights
    (seeded; FAQD's recipe); a name: that ``TEACHERS`` entry.
    """
    num_classes = check_dataset(config.dataset).num_classes
    if config.student_init == "scratch":
        seed_everything(config.seed)
        return "scratch", build_model(config.arch, num_classes)
    if config.student_init == "auto" and arch_of(teacher) == config.arch:
        return f"teacher ({teacher_name})", teacher
    if config.student_init == "auto":
        name, model = _load_first(teacher_candidates("sqakd", config.arch, config.dataset),
                                  f"full-precision {config.arch} to initialise the student from",
                                  f"Train one with `python -m akt_lib teacher --dataset {config.dataset} --arch "
                                  f"{config.arch}`, or pass student_init='scratch'.")
    else:
        name, model = config.student_init, load_teacher(config.student_init)
    if arch_of(model) != config.arch:
        raise ValueError(f"student_init {name!r} is a {arch_of(model)}, but the student arch is {config.arch}")
    return name, model


# --- one run: models, optimizer, losses ------------------------------------------------------------

def _quantizer_params(student: nn.Module) -> list[nn.Parameter]:
    """The parameters of the second group (``lr_q``, ``weight_decay_q``).

    SQAKD's CIFAR code gives its EWGS intervals and output scales their own Adam at lr 1e-5
    (§4a); FAQD gives its ReLU steps ``alpha`` their own weight decay (§5a). PACT's ``alpha`` and
    LSQ's step are *not* in this group: SQAKD ran those quantizers on Tiny-ImageNet only (§4a), where
    its ``TinyImageNet/main.py`` builds one optimizer over every parameter (methods.md does not
    record this), and at lr 1e-5 without weight decay PACT's clip level would hardly leave its
    initial 6 (it only gets gradient from values above it).
    """
    params = []
    for m in student.modules():
        if isinstance(m, (IntervalQuantizer, QuantReLU)):
            params += list(m.parameters())
        elif isinstance(m, QATConv2d) and m.output_scale is not None:
            params.append(m.output_scale)
    return params


class _Run:
    """Teacher, student, adapter, optimizer, schedule and the generator of one run; its loss and step."""

    def __init__(self, config: LabelFreeConfig, teacher: nn.Module, init: nn.Module, device: torch.device,
                 fast: str = "off"):
        c = self.config = config
        self.device = device
        self.fast = resolve_fast(fast, device)
        self.amp = c.amp and device.type == "cuda"
        self.teacher = copy.deepcopy(teacher).to(device).eval()  # ours to hook; the caller's stays untouched
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        seed_everything(c.seed)  # the adapter's initial weights
        self.student = quantize_model(init, c.quant_config).to(device).train()
        for p in self.student.parameters():
            p.requires_grad_(True)
        use_fa = c.loss == "faqd" and c.fa_type != "none"
        self.adapter = FeatureAdapter().to(device) if use_fa else None
        self.t_tap = FeatureTap(self.teacher, kind="stage", detach=True) if use_fa else None
        self.s_tap = FeatureTap(self.student, kind="stage", detach=False) if use_fa else None
        if self.adapter is not None and not c.train_adapter:  # FAQD's weight-only scripts: a random adapter
            self.adapter.requires_grad_(False)

        q_ids = {id(p) for p in _quantizer_params(self.student)}
        model_params = [p for p in self.student.parameters() if id(p) not in q_ids]
        if self.adapter is not None and c.train_adapter:
            model_params += list(self.adapter.parameters())
        groups = [{"params": model_params, "weight_decay": c.weight_decay}]
        q_params = [p for p in self.student.parameters() if id(p) in q_ids]
        if q_params:  # SQAKD: a second Adam at lr 1e-5, wd 0; FAQD: alpha with wd 1e-4 × 0.01
            groups.append({"params": q_params, "weight_decay": c.weight_decay_q, "lr": c.lr_q or c.lr})
        if c.optimizer == "adam":  # one Adam with two groups = SQAKD's two Adams (Adam is per parameter)
            self.opt = torch.optim.Adam(groups, lr=c.lr, **fused_kwargs(self.fast, device))
        else:
            self.opt = torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                       **fused_kwargs(self.fast, device))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=c.epochs)  # stepped per epoch
        self.gen = torch.Generator(device=device).manual_seed(c.seed)  # shuffling, augmentation, init batch
        # The fast path compiles forward + loss (graph breaks allowed: FFA draws its projections
        # from its own torch.Generator, which stays outside the graph). EWGS's Hessian traces keep
        # the eager ``loss`` (they need double backward).
        self.loss_step = compile_step(self._amp_loss, self.fast, "the label-free step", fast == "auto",
                                      fullgraph=False)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, 32, 32)`` → cropped, flipped, normalised float32 (on the device)."""
        return normalize(random_crop_flip(images, 4, generator=self.gen), self.config.dataset)

    def loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, parts)`` with ``parts = (loss, kd, fa)`` detached; ``batch``: images (CE: ``(images, labels)``)."""
        c = self.config
        if c.supervised:
            x, y = batch
            loss = F.cross_entropy(self.student(x), y)
            return loss, torch.stack([loss.detach(), torch.zeros_like(loss), torch.zeros_like(loss)]).float()
        if not isinstance(batch, torch.Tensor):
            raise TypeError("a label-free batch is an image tensor")
        with torch.no_grad():
            t = self.teacher(batch)  # (B, num_classes); the teacher tap (if any) keeps its stage maps
        s = self.student(batch)
        zero = torch.zeros((), device=s.device)
        if c.loss == "sqakd_kl":
            kd = sqakd_kl_loss(s, t, T=c.kd_T)  # T²·KL, batch mean (SQAKD's DistillKL)
            return kd, torch.stack([kd.detach(), kd.detach(), zero])
        kd = logit_mse_loss(s, t) if c.kd_loss == "mse" else sqakd_kl_loss(s, t, T=c.kd_T, reduction="sum")
        fa = zero
        if self.adapter is not None:
            fa_fn = fa_loss if c.fa_type == "fa" else lambda a, b: ffa_loss(a, b, c.ffa_projections)
            fa = sum(fa_fn(f_s, f_t) for f_s, f_t in zip(self.adapter(self.s_tap.features), self.t_tap.features))
        loss = c.kd_coef * kd + c.fa_coef * fa
        return loss, torch.stack([loss.detach(), kd.detach().float(), fa.detach().float()])

    def _amp_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.loss(batch)

    def step(self, batch) -> torch.Tensor:
        mark_step_begin(self.fast)
        loss, parts = self.loss_step(batch)
        if self.fast == "cudagraphs":  # graph outputs are overwritten by the next replay
            parts = parts.clone()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:  # FAQD's _full scripts clip the student's gradients (not the adapter's)
            nn.utils.clip_grad_norm_(list(self.student.parameters()), self.config.grad_clip)
        self.opt.step()
        return parts

    def update_deltas(self, batches: list) -> dict:
        """EWGS: re-estimate every ``delta`` from Hessian traces on ``batches`` (float32, no autocast)."""
        c = self.config
        deltas = update_ewgs_deltas(self.student, lambda _m, b: self.loss(b)[0], batches,
                                    num_batches=len(batches), max_iter=c.ewgs_hutchinson_iters, seed=c.seed)
        dw, da = zip(*deltas.values())
        return {"mean_delta_w": sum(dw) / len(dw), "mean_delta_a": sum(da) / len(da)}

    def state_dict(self) -> dict:
        return {"student": self.student.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "generator": self.gen.get_state(),
                "adapter": self.adapter.state_dict() if self.adapter is not None else None,
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        if self.adapter is not None:
            self.adapter.load_state_dict(state["adapter"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def remove_hooks(self) -> None:
        for tap in (self.t_tap, self.s_tap):
            if tap is not None:
                tap.remove()


def _method_label(c: LabelFreeConfig) -> str:
    q = {"ewgs": "EWGS" + (" (δ=0, STE)" if c.ewgs_delta == "zero" else ""), "pact": "PACT", "lsq": "LSQ",
         "dorefa": "DoReFa", "faqd": "FAQD quantizer"}[c.quantizer]
    if c.loss == "ce":
        label = f"{q}, trained with labels (CE)"
    elif c.loss == "sqakd_kl":
        label = f"{q} + SQAKD (label-free KL)"
    else:
        kd = "logit MSE" if c.kd_loss == "mse" else f"KL T={c.kd_T:g}"
        label = f"{q} + FAQD ({kd}" + ("" if c.fa_type == "none" else f" + {c.fa_coef:g}·{c.fa_type.upper()}") + ")"
    if c.faqd_alpha_grad == "released":
        label += " [ReLU steps fixed, as released]"
    return label + (" [bf16 autocast on CUDA]" if c.amp else "")


# --- the trainer -------------------------------------------------------------------------------------

def _paths(out_dir: Path, config: LabelFreeConfig, name: str) -> tuple[Path, Path]:
    stem = f"{name}-{config.dataset}-seed{config.seed}-{config.profile}"
    return out_dir / f"{stem}.json", out_dir / "checkpoints" / f"{stem}.pt"


def train_labelfree(config: LabelFreeConfig, name: str = "labelfree", out_dir: str | Path | None = None,
                    teacher: nn.Module | None = None, student: nn.Module | None = None, resume: bool = True,
                    progress: bool = True, device: str | torch.device | None = None,
                    time_budget_s: float | None = None, stop_after_iters: int | None = None,
                    tags: dict | None = None, fast: str = "auto",
                    stop_on_nonfinite: bool = True) -> tuple[nn.Module, dict]:
    """Train a quantized student by label-free distillation (or, ``loss="ce"``, with labels). Chapters 6–7.

    Args:
        config: a ``LabelFreeConfig``.
        name: the run's name (file names and the record).
        out_dir: where the JSON record and ``checkpoints/`` go; ``None`` keeps nothing on disk.
        teacher: an FP teacher module (default: ``config.teacher`` by name); never modified.
        student: the FP model to quantize into the student (default: ``config.student_init``); any
            CIFAR ResNet of ``akt_lib.models`` (its depth is recorded as ``student_arch``).
        resume: continue from this run's checkpoint in ``out_dir`` if there is one (same config only).
        progress: show a tqdm bar.
        device: default ``akt_lib.utils.get_device()``.
        time_budget_s: stop cleanly (checkpoint written) once this much wall time has passed.
        stop_after_iters: stop cleanly at this global iteration (tests, splitting long runs).
        tags: extra record fields, e.g. ``{"experiment": "ewgs+sqakd", "bits": "w2a2"}``.
        fast: ``akt_lib.fast`` mode (``"auto"``: compiled on CUDA, eager elsewhere); recorded.
        stop_on_nonfinite: finish the run after an epoch whose mean losses are not finite
            (``record["diverged"]``; ``records.mark_diverged``); ``False`` runs on through NaN.

    Returns:
        ``(student, record)``: the student in ``eval()`` mode, and the record (``kind="labelfree"``;
        ``status`` is ``"complete"``, or ``"stopped"`` when a budget ended the call early).

    Raises:
        TeacherUnavailableError: a teacher or FP student named by the config cannot be loaded here.
        ValueError: bad config, class-count mismatch, checkpoint of another config.
    """
    from tqdm.auto import tqdm

    if not isinstance(config, LabelFreeConfig):
        raise TypeError(f"config must be a LabelFreeConfig, got {type(config).__name__}")
    time_budget_s = check_seconds(time_budget_s)
    stop_after_iters = check_count(stop_after_iters, "stop_after_iters")
    device = get_device(device) if not isinstance(device, torch.device) else device
    record_path, ckpt_path = _paths(Path(out_dir), config, name) if out_dir is not None else (None, None)
    state = None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)  # on the CPU: RNG states must stay there; weights are copied over
        if state.get("config") != config.to_dict() or state.get("device_type") != device.type:
            raise ValueError(f"checkpoint {ckpt_path} was written with another config or device type "
                             f"({state.get('device_type')}); delete it or pass resume=False")
    teacher_name, teacher, teacher_sha = resume_teacher(state, ckpt_path, teacher, lambda: resolve_teacher(config))
    check_teacher_classes(teacher, config.dataset)
    init_name = "given"
    if student is None:
        init_name, student = resolve_student_init(config, teacher, teacher_name)
    check_teacher_classes(student, config.dataset)

    # The data. A label-free run holds images only; labels exist solely in the supervised branch.
    if config.supervised:
        images, labels = load_train_labelled(config.dataset, config.train_size)
        labels = labels.to(device)
    else:
        images = load_train_images(config.dataset, config.train_size)
    images = images.to(device)  # resident: (N, 3, 32, 32) uint8
    x_test, y_test = load_split(config.dataset, "test")
    idx = _subset(config.test_size, len(x_test), "test_size")
    x_test, y_test = x_test[idx].to(device), y_test[idx]
    bs, n = config.batch_size, images.shape[0]
    # Drop the ragged last batch (fixed shapes for the compiled step): SQAKD's 50,000 images at batch
    # 256 give 195 steps instead of the reference's 196 (its last batch has 80 images); reshuffled
    # every epoch, so no image is left out for good. FAQD's 500 × 100 is exact.
    steps = n // bs
    if steps == 0:
        raise ValueError(f"batch_size={bs} exceeds the {n} training images (train_size={config.train_size})")

    run = _Run(config, teacher, student, device, fast=fast)
    if config.supervised:
        def batch_of(i):  # the CE baseline: (augmented images, labels) of the same indices
            return run.augment(images[i]), labels[i]
    else:
        def batch_of(i):  # label-free: an image tensor, nothing else
            return run.augment(images[i])

    epoch, step, order, sums, record = 0, 0, None, None, None
    epoch_train_s = 0.0  # training time of the current epoch spent in earlier segments (a mid-epoch resume)
    if state is not None:
        run.load_state_dict(state["run"])
        epoch, step, order, sums, record = (state[k] for k in ("epoch", "step", "order", "sums", "record"))
        epoch_train_s = state.get("epoch_train_s", 0.0)  # older checkpoints: this segment's time only
        if record.get("status") == "complete":  # nothing to do: the finished run, its record untouched
            run.remove_hooks()
            run.student.eval()
            return run.student, record
        order, sums = (None, None) if order is None else (order.to(device), sums.to(device))
    else:
        if any(isinstance(m, QATConv2d) for m in run.student.modules()):
            # SQAKD's init_quant_model: intervals and output scales from one (augmented) training batch.
            first = torch.randperm(n, generator=run.gen, device=device)[:bs]
            init_qat_model(run.student, run.augment(images[first]))
        record = new_record("labelfree", name, config.dataset, config.to_dict(), config.seed, config.profile, device)
        record.update(recipe=config.recipe, method=_method_label(config), labels_used=config.supervised,
                      teacher=teacher_name, teacher_sha256=teacher_sha, teacher_arch=arch_of(teacher),
                      student_init=init_name,
                      student_arch=arch_of(student),
                      train_size=n, test_size=int(x_test.shape[0]), steps_per_epoch=steps,
                      amp_dtype="bfloat16" if run.amp else None, data_on_device=True, ewgs_updates=[],
                      teacher_acc=evaluate(run.teacher, x_test, y_test, config.dataset, config.eval_batch_size),
                      init_acc=evaluate(run.student, x_test, y_test, config.dataset, config.eval_batch_size),
                      **(tags or {}))
    record_fast_mode(record, run.fast)
    start_segment(record, device, run.fast, epoch * steps + step)
    wall0, t0 = record["wall_time_s"], time.perf_counter()

    def save(status: str, epoch_train_s: float = 0.0) -> None:
        record["wall_time_s"] = wall0 + time.perf_counter() - t0
        record["status"] = status
        record_fallbacks(record, run.loss_step)
        if ckpt_path is not None:
            save_checkpoint({"config": config.to_dict(), "device_type": device.type, "run": run.state_dict(),
                             "epoch": epoch, "step": step, "order": order, "sums": sums, "record": record,
                             "epoch_train_s": epoch_train_s}, ckpt_path)
        if record_path is not None:
            save_record(record, record_path)

    def must_stop(it: int) -> bool:
        return (stop_after_iters is not None and it >= stop_after_iters) or signals.requested or \
            (time_budget_s is not None and time.perf_counter() - t0 > time_budget_s)

    c = config
    bar = tqdm(total=c.epochs * steps, initial=epoch * steps + step, disable=not progress, desc=name, leave=False)
    stopped, old_benchmark = False, torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick its kernels
    with StopOnSignal() as signals:  # SIGTERM (a runner or `timeout` ending the command): stop cleanly
        try:
            while epoch < c.epochs and not stopped:
                t_epoch = time.perf_counter()
                if step == 0:  # a new epoch: shuffle; EWGS re-estimates delta every ewgs_update_every epochs
                    order = torch.randperm(n, generator=run.gen, device=device)
                    sums = torch.zeros(3, device=device)  # (loss, kd, fa) summed over steps; on device: no sync
                    if c.quantizer == "ewgs" and c.ewgs_delta == "hessian" and epoch > 0 \
                            and epoch % c.ewgs_update_every == 0:
                        k = min(c.ewgs_num_batches, steps)
                        batches = [batch_of(order[i * bs:(i + 1) * bs]) for i in range(k)]  # this epoch's first k
                        record["ewgs_updates"].append({"epoch": epoch, **run.update_deltas(batches)})
                run.student.train()
                while step < steps:
                    sums += run.step(batch_of(order[step * bs:(step + 1) * bs]))
                    step += 1
                    bar.update(1)
                    if step < steps and must_stop(epoch * steps + step):
                        stopped = True
                        break
                if stopped:  # mid-epoch: the checkpoint keeps the epoch's training time so far
                    if device.type == "cuda":  # including its steps still queued
                        torch.cuda.synchronize(device)
                    epoch_train_s += time.perf_counter() - t_epoch
                    break
                loss, kd, fa = (sums / steps).tolist()  # waits for the epoch's steps (queued on a GPU)
                t1 = time.perf_counter()
                acc = evaluate(run.student, x_test, y_test, c.dataset, c.eval_batch_size)
                record["history"].append({"epoch": epoch, "iteration": (epoch + 1) * steps, "acc": acc, "loss": loss,
                                          "kd": kd, "fa": fa, "lr": run.opt.param_groups[0]["lr"],
                                          "lr_q": run.opt.param_groups[1]["lr"] if len(run.opt.param_groups) > 1
                                          else None, "train_s": epoch_train_s + t1 - t_epoch,
                                          "eval_s": time.perf_counter() - t1})
                run.sched.step()
                epoch, step, order, sums, epoch_train_s = epoch + 1, 0, None, None, 0.0
                bar.set_postfix(acc=f"{acc:.2f}", best=f"{max(h['acc'] for h in record['history']):.2f}")
                if stop_on_nonfinite and mark_diverged(record, LOSS_KEYS):  # NaN weights from here on
                    break
                stopped = epoch < c.epochs and must_stop(epoch * steps)
                if not stopped:
                    save("running")
        except Exception as e:  # the record says so (a crashed run is not "running"); the checkpoint stays
            mark_failed(record, record_path, e)
            raise
        finally:
            bar.close()
            run.remove_hooks()
            torch.backends.cudnn.benchmark = old_benchmark
    run.student.eval()
    if stopped:
        save("stopped", epoch_train_s)
        return run.student, record
    finish_record(record)
    record["drop_best"] = record["teacher_acc"] - record["best_acc"]
    record["drop_final"] = record["teacher_acc"] - record["final_acc"]
    last = [h["acc"] for h in record["history"][-5:]]  # SQAKD also logs the mean of the last 5 epochs (§4a)
    record["last5_mean_acc"] = sum(last) / len(last)
    save("complete")
    return run.student, record
