"""akt_lib: the companion library of the low-bit quantization + knowledge distillation book.

Modules, each one idea (the chapter that introduces it in brackets):

* ``quant``       – the zero-shot family's quantizer and ``quantize_model`` (1)
* ``models``      – pytorchcv-compatible CIFAR ResNets and teacher loaders (1, 2)
* ``data``        – datasets by name: ``cifar10``, ``cifar100``, ``cifar10-jpeg`` (1)
* ``evaluate``    – top-1 accuracy (1)
* ``augment``, ``teacher`` – GPU-side augmentation and the teacher recipe (2)
* ``generator``, ``bns``, ``zeroq`` – data from the teacher: GDFQ's generator, BN statistics, ZeroQ (3)
* ``losses``, ``features`` – student/generator losses, AKT's attention distillation, feature taps (4)
* ``inundation``  – AIT's gradient inundation (5)
* ``zsq``, ``experiments`` – the zero-shot trainer and its named table rows (3–5)
* ``qat``, ``faqd`` – SQAKD's and FAQD's quantizers and losses (6, 7)
* ``records``, ``utils`` – run records/checkpoints, seeding, device, provenance
"""

from .data import DATASETS, load_split, normalize
from .evaluate import evaluate
from .models import build_model, load_teacher, resnet20
from .quant import QuantConfig, freeze_act_ranges, quantize_model, unfreeze_act_ranges
from .utils import get_device, seed_everything
from .qat import QATConfig  # noqa: E402 - importing registers the family with quantize_model
from .faqd import FAQDConfig  # noqa: E402 - likewise
from .zsq import ZSQConfig, train_zsq

__version__ = "0.1.0"

__all__ = ["DATASETS", "load_split", "normalize", "evaluate", "build_model", "load_teacher", "resnet20",
           "QuantConfig", "QATConfig", "FAQDConfig", "quantize_model", "freeze_act_ranges",
           "unfreeze_act_ranges", "ZSQConfig", "train_zsq", "get_device", "seed_everything", "__version__"]
