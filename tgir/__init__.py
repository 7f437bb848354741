"""tgir: text-guided image retrieval, from research models to deployable engines.

Importing ``tgir`` is cheap: it pulls in neither torch nor any optional backend. Sub-packages
(``tgir.data``, ``tgir.evaluate``, ``tgir.export``, ``tgir.runtime``...) are imported on demand.
"""

from tgir.errors import TgirError, TgirInternalError, TgirUserError

__version__ = "0.1.0"

__all__ = ["TgirError", "TgirInternalError", "TgirUserError", "__version__"]
