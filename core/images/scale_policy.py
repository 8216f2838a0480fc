"""What a physical-scale model does with an image whose pixel size nothing gives
(``data.unknown_scale``): ``skip`` it with a warning, or take it ``as_is``, at the
model's scale, with a warning."""

UNKNOWN_SCALE_POLICIES = ("skip", "as_is")
