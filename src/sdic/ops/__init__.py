"""Performance ops, each beside its plain reference twin (``*_ref``), and the execution policy.

The networks call these by name; ``tests/test_ops.py`` holds every fast op equal to its twin,
in inference and training mode, in fp32 and bf16. Everything is plain PyTorch: nothing is
compiled, every op runs on any device.
"""

from .conv import (
    bn_is_frozen,
    conv_bn_folded,
    conv_bn_ref,
    conv_transpose_k4s2,
    conv_transpose_k4s2_ref,
    fold_bn,
    is_k4s2_transpose,
    polyphase_weight,
    run_conv,
    volume_stem,
    volume_stem_ref,
)
from .execution import TRAINING, Execution, UsesExecution, derived, micro_batched, set_derived, set_execution
from .modulated_conv import (
    add_noise_leaky_relu_,
    clamp_,
    compute_dtype,
    demodulation_energy,
    fp32_region,
    modulated_conv2d,
    modulated_conv2d_ref,
    prefers_per_sample,
    styled_activation_ref,
)
from .upfirdn2d import fir_kernel, upfirdn2d, upfirdn2d_ref

__all__ = [
    "TRAINING", "Execution", "UsesExecution", "add_noise_leaky_relu_", "bn_is_frozen", "clamp_", "compute_dtype",
    "conv_bn_folded", "conv_bn_ref", "conv_transpose_k4s2", "conv_transpose_k4s2_ref", "demodulation_energy",
    "derived", "fir_kernel", "fold_bn", "fp32_region", "is_k4s2_transpose", "micro_batched", "modulated_conv2d",
    "modulated_conv2d_ref", "polyphase_weight", "prefers_per_sample", "run_conv", "set_derived", "set_execution",
    "styled_activation_ref", "upfirdn2d", "upfirdn2d_ref", "volume_stem", "volume_stem_ref",
]
