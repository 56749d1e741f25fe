"""akt_lib: the companion library of the low-bit quantization + knowledge distillation book.

Modules, each one idea:

* ``akt_lib.quant``    – the zero-shot family's quantizer and ``quantize_model`` (chapter 1)
* ``akt_lib.models``   – pytorchcv-compatible CIFAR ResNets and teacher loaders
* ``akt_lib.data``     – datasets by name (``cifar10``, ``cifar100``, ``cifar10-jpeg``)
* ``akt_lib.evaluate`` – top-1 accuracy
* ``akt_lib.utils``    – seeding, device, provenance
"""

from .data import DATASETS, load_split, normalize
from .evaluate import evaluate
from .models import build_model, load_teacher, resnet20
from .quant import QuantConfig, freeze_act_ranges, quantize_model, unfreeze_act_ranges
from .utils import get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["DATASETS", "load_split", "normalize", "evaluate", "build_model", "load_teacher", "resnet20",
           "QuantConfig", "quantize_model", "freeze_act_ranges", "unfreeze_act_ranges", "get_device",
           "seed_everything", "__version__"]
