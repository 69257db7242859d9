"""InterFaceGAN-style edit directions learned from attribute labels (docs/directions.md).

* :mod:`.classifier`: a small multi-attribute CNN trained on a labelled image folder;
* :mod:`.interfacegan`: sample codes, score their images, fit a linear boundary in W,
  its unit normal is the direction; conditional (orthogonalised) directions; direction files;
* :mod:`.assess`: does an edit move its attribute, and only it? The useful factor range;
* :mod:`.directions`: the whole procedures as calls (:func:`learn_classifier`,
  :func:`learn_directions`, :func:`assess_directions`, :func:`condition_direction`), each
  returning a result object and writing what ``sdic directions`` writes.
"""

from .assess import Assessment, AssessSettings, assess_direction, edit_grid, factor_grid, useful_range
from .classifier import AttributeClassifier, ClassifierConfig, load_classifier, save_classifier
from .directions import (
    AssessOptions,
    ConditionedDirection,
    DirectionResult,
    DirectionsReport,
    LearnedClassifier,
    LearnOptions,
    assess_directions,
    condition_direction,
    learn_classifier,
    learn_directions,
)
from .interfacegan import (
    Boundary,
    Target,
    fit_boundary,
    fit_targets,
    load_direction,
    load_generator,
    orthogonalize,
    parse_target,
    sample_w,
    save_direction,
    score_w,
)

__all__ = [
    "AssessOptions",
    "AssessSettings",
    "Assessment",
    "AttributeClassifier",
    "Boundary",
    "ClassifierConfig",
    "ConditionedDirection",
    "DirectionResult",
    "DirectionsReport",
    "LearnOptions",
    "LearnedClassifier",
    "Target",
    "assess_direction",
    "assess_directions",
    "condition_direction",
    "edit_grid",
    "factor_grid",
    "fit_boundary",
    "fit_targets",
    "learn_classifier",
    "learn_directions",
    "load_classifier",
    "load_direction",
    "load_generator",
    "orthogonalize",
    "parse_target",
    "sample_w",
    "save_classifier",
    "save_direction",
    "score_w",
    "useful_range",
]
