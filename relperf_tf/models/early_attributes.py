"""Layer attributes set before a functional model's `super().__init__`, on every backend."""

import keras


class EarlyAttributes:
    """Mixin (before `keras.Model`) for models that create their layers as attributes, then
    build their graph, then call the functional constructor (keras-hub's order).

    On PyTorch a Keras layer is a `torch.nn.Module`, which refuses sub-modules
    before `Module.__init__` has run; until then Keras' tracker records the
    value (so weights come in the same order as on the other backends) and the
    attribute is set plainly, not registered with PyTorch (Keras hands PyTorch
    the model's variables itself).
    """

    def __setattr__(self, name, value):
        if (
            keras.backend.backend() == "torch"
            and "_modules" not in self.__dict__
            and name != "_tracker"
        ):
            self._initialize_tracker()  # Keras' own first step (a no-op once it exists)
            object.__setattr__(self, name, self._tracker.track(value))
            return
        super().__setattr__(name, value)
