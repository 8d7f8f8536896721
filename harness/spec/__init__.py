"""Study specs: a YAML file (studies/*.yaml) read into a frozen, checked StudySpec. No Optuna, no torch.

loader.py finds and reads a spec; schema.py (with sections, params, sampling) holds its rules;
messages.py words pydantic's errors; config_check.py tries its values on the training config;
values.py is what the rest of the harness reads; fingerprint.py hashes what makes trials comparable.
"""
from .loader import SpecError, available_studies, load_study_spec, studies_dir
from .schema import BUDGET_KEYS
from .values import ParamSpec, StudySpec, train_values

__all__ = ["BUDGET_KEYS", "ParamSpec", "SpecError", "StudySpec", "available_studies", "load_study_spec",
           "studies_dir", "train_values"]
