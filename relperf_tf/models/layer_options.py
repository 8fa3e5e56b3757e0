"""The layer options a backbone passes through to its layers, each owned by one layer.

A layer lists the constructor arguments that models may set for it in its
`OPTIONS`; its constructor holds their defaults and `check_options` their
rules. The backbone takes them as keyword arguments and resolves each unset
one to its layer's default, so a default lives in one place.
"""

import inspect

from relperf_tf import validation
from relperf_tf.layers import (
    ClippedRelativeAttention,
    FavorKernel,
    PixelEmbedding,
    RelativeFavorAttention,
    TransformerBlock,
)
from relperf_tf.layers.favor_kernel import upgrade_legacy_options

# The layers whose options a backbone passes through.
LAYER_OWNERS = (
    PixelEmbedding,
    TransformerBlock,
    FavorKernel,
    RelativeFavorAttention,
    ClippedRelativeAttention,
)


def layer_option_names():
    """Every option name of `LAYER_OWNERS`, in order."""
    return tuple(name for owner in LAYER_OWNERS for name in owner.OPTIONS)


def default_of(owner, name):
    """The default of `owner`'s constructor argument `name`."""
    return inspect.signature(owner.__init__).parameters[name].default


def options_of(owner, options):
    """The entries of `options` that `owner.OPTIONS` names."""
    return {name: options[name] for name in owner.OPTIONS if name in options}


def check_layer_options(options, allowed_extra=()):
    """Upgrades legacy names, rejects unknown options, runs each owner's checks.

    Returns the (upgraded) options. Raises `InvalidSetting` naming the option.
    """
    options = upgrade_legacy_options(dict(options))
    known = set(layer_option_names())
    unknown = sorted(set(options) - known)
    if unknown:
        allowed = sorted(known | set(allowed_extra))
        raise validation.InvalidSetting(f"unknown hyperparameters {unknown}; allowed: {allowed}.")
    for owner in LAYER_OWNERS:
        owner.check_options(**options_of(owner, options))
    return options


def resolved_layer_options(options):
    """Every option of `LAYER_OWNERS`, at its layer's default unless `options` gives it."""
    return {
        name: options.get(name, default_of(owner, name))
        for owner in LAYER_OWNERS
        for name in owner.OPTIONS
    }
