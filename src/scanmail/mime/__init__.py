"""The streaming MIME walk: lines, headers, the walker, names, lenient readings, archives.

`explode()` walks one message and decodes every part (and every archive member) into a
private folder; `Explosion` is what it found. The rest of the package serves the walk.
"""

from scanmail.mime.part import Explosion, LimitExceeded, Limits, Part, safe_name
from scanmail.mime.walker import Walker, explode

__all__ = ["Explosion", "LimitExceeded", "Limits", "Part", "Walker", "explode", "safe_name"]
