"""Deploy targets: toolchain profiles (data files), the checker and the dialect writer.

- :func:`load_profile` / :func:`known_targets`: the profiles in ``profiles/*.toml``
  (one per toolchain, every rule citing its vendor document; see
  :mod:`pynetbuilder.targets.profile` for the format).
- :func:`check`: the violations of one profile in an analysed net.
- :func:`for_target`: a deploy ``NetParameter`` rewritten for a target, and
  ``target_blobs``: its weights from the original's (see
  :mod:`pynetbuilder.targets.writer`).
"""

from pynetbuilder.targets.checker import ReadFacts, Violation, check, pooled_sizes
from pynetbuilder.targets.profile import Profile, ProfileError, known_targets, load_profile

__all__ = ["Profile", "ProfileError", "ReadFacts", "Violation", "check", "known_targets",
           "load_profile", "pooled_sizes"]
