"""The engine's feature cards, as a part of `Engine` (it mixes this in): a feature's card and label for any
dictionary, finding features, and building cards from text. Each method is a thin call into this package."""

from __future__ import annotations

from collections.abc import Callable

from lenstop.models.cards import api as cards
from lenstop.models.cards import search as feature_search
from lenstop.models.cards.build import attach_cached, build_cards
from lenstop.models.cards.spec import PassOptions, PassResult
from lenstop.models.cards.texts import Corpus
from lenstop.models.feature_cards import FeatureCard, FeatureHit
from lenstop.models.runtime.handle import ModelHandle


class CardsPart:
    """What `Engine` answers about features, from its `handle`."""

    handle: ModelHandle

    def label(self, layer: int, feature: int) -> str | None:
        return cards.label(self.handle, layer, feature)

    def find_features(
        self,
        *,
        search: str | None = None,
        prompt: str | None = None,
        span: tuple[int, int] | None = None,
        promotes: str | None = None,
        limit: int = 20,
    ) -> list[FeatureHit]:
        """Features over every dictionary: by label or `LAYER:FEATURE` (`search`), by the tokens `span` (start, stop)
        of `prompt` they fire on, or by the token they `promote` (" first" or #ID); best first."""
        return feature_search.find(self.handle, search=search, prompt=prompt, span=span, promotes=promotes, limit=limit)

    def build_cards(
        self, corpus: Corpus, options: PassOptions | None = None, progress: Callable[[int, int], None] | None = None
    ) -> PassResult:
        """Feature cards from text for every dictionary, in one pass over `corpus` (`lenstop.models.cards.texts`):
        top contexts, examples at activation quantiles, density and a histogram. Resumes an interrupted pass;
        the cards are cached under the model's and each dictionary's digests, and shown from then on."""
        result = build_cards(self.handle, corpus, options, progress)
        attach_cached(self.handle)
        return result

    def card(self, layer: int, feature: int) -> FeatureCard | None:
        """The feature's card, for any dictionary: the tokens its decoder promotes and suppresses, its decoder norm
        and nearest features (from the weights), and its label, top contexts and frequency where it has cards."""
        return cards.card(self.handle, layer, feature)
