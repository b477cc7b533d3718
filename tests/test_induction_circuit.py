"""On the bundled demo, the circuit tools find the induction circuit by themselves.

Each run builds a fresh prompt: a random span of single-token words, then the span
again without its last word, so the model should predict that word by induction.
The corrupted prompt replaces the first copy with other random words, so nothing
can be copied. The heads are known from the demo's model card: the previous-token
head L0.H0 feeds induction heads in layer 1 (H1, H2, H4, H5 and H6). The seed is in
every assertion message, so a failure can be replayed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import pytest

from lenstop.models.circuits.spec import Metric, Node
from lenstop.models.engine import Engine

INDUCTION_HEADS = {1, 2, 4, 5, 6}  # layer 1, from the model card's standard task
PREVIOUS_TOKEN_HEAD = 0  # layer 0
SPAN = 20


@dataclass(frozen=True)
class Case:
    seed: int
    prompt: str
    corrupt: str
    metric: Metric
    key: int  # the position of the answer's first occurrence, which the induction heads attend to

    def __str__(self) -> str:
        return f"seed {self.seed}: {self.prompt!r}"


@pytest.fixture(scope="module")
def demo() -> Engine:
    return Engine.load("demo", device="cpu")


@pytest.fixture(scope="module")
def case(demo: Engine) -> Case:
    from lenstop.models.tokens import token_texts

    tokenizer = demo.model.tokenizer
    words = [w for w in token_texts(tokenizer, range(tokenizer.vocab_size)) if w[:1] == " " and w[1:].isalpha()]
    words = [w for w in words if len(tokenizer.encode(w, add_special_tokens=False)) == 1]
    seed = secrets.randbelow(2**31)
    picked = [str(w) for w in np.random.default_rng(seed).choice(words, size=2 * SPAN, replace=False)]
    span, other = picked[:SPAN], picked[SPAN:]
    prompt, corrupt = "".join(span + span[:-1]), "".join(other + span[:-1])
    assert list(demo.analyse(prompt).tokens[1:]) == span + span[:-1], seed  # one token a word, as built
    return Case(seed, prompt, corrupt, Metric(target=span[-1], wrong=other[-1]), key=SPAN)


def test_the_standard_task_names_the_heads(demo: Engine) -> None:
    roles = demo.head_roles()
    previous = [s.previous or 0 for s in roles.layers[0]]
    induction = [s.induction or 0 for s in roles.layers[1]]
    assert int(np.argmax(previous)) == PREVIOUS_TOKEN_HEAD and previous[0] > 0.8
    assert {h for h, v in enumerate(induction) if v > 0.5} == INDUCTION_HEADS


def test_attribution_singles_out_the_heads(demo: Engine, case: Case) -> None:
    found = demo.attribute(case.prompt, case.metric, corrupt=case.corrupt, steps=8, top=None)
    assert int(np.argmax(found.head_totals[0])) == PREVIOUS_TOKEN_HEAD, case
    assert int(np.argmax(found.head_totals[1])) in INDUCTION_HEADS, case


def test_patching_singles_out_the_heads(demo: Engine, case: Case) -> None:
    found = demo.patch(case.prompt, case.corrupt, case.metric, direction="corrupt->clean", features=0)
    assert int(np.argmax(found.heads[0])) == PREVIOUS_TOKEN_HEAD and found.heads[0].max() > 0.5, case
    assert int(np.argmax(found.heads[1])) in INDUCTION_HEADS, case
    assert found.head_positions is not None
    # The previous-token head matters where the answer first occurred: the induction heads' key.
    at = found.head_positions[0, PREVIOUS_TOKEN_HEAD]
    assert int(np.argmax(at)) == case.key, (case, np.round(at, 2))


def test_following_the_induction_head_leads_to_the_previous_token_head(demo: Engine, case: Case) -> None:
    found = demo.attribute(case.prompt, case.metric, corrupt=case.corrupt, steps=8, top=None)
    last = len(found.tokens) - 1
    head = int(np.argmax(found.head_totals[1]))
    upstream = demo.attribute(
        case.prompt, case.metric, corrupt=case.corrupt, steps=8, top=None, path=(Node("head", 1, last, head=head),)
    )
    heads = [s.node for s in upstream.nodes if s.node.kind == "head"]
    assert heads[0].layer == 0 and heads[0].head == PREVIOUS_TOKEN_HEAD, (case, [h.describe() for h in heads[:5]])


def test_the_circuit_contains_the_path(demo: Engine, case: Case) -> None:
    """An induction head of layer 1 is in the circuit, fed by what layer 0 holds where the answer first occurred.

    Which layer-0 node carries that varies with the prompt: the previous-token head L0.H0 itself, or the
    layer-0 dictionary's features and error node at that position, which its output runs through (the
    test above follows the induction head upstream, and there L0.H0 is the strongest head).
    """
    circuit = demo.circuit(case.prompt, case.metric, corrupt=case.corrupt, steps=8, node_threshold=0.02, max_nodes=40)
    chosen = {s.node for s in circuit.nodes}
    induction = [n for n in chosen if n.kind == "head" and n.layer == 1 and n.head in INDUCTION_HEADS]
    assert induction, (case, [n.describe() for n in chosen])
    feeding = {e.source for e in circuit.edges if e.target in induction}
    assert any(n.position == case.key and n.layer in (0, None) for n in feeding), (
        case,
        [f"{e.source.describe()} -> {e.target.describe() if e.target else 'metric'}" for e in circuit.edges],
    )


def test_the_attribution_graph_shows_the_copy_and_the_previous_token_features(case: Case) -> None:
    """The README's worked example, on a fresh prompt: on the demo's transcoders, the prediction's strongest
    input is the answer's own token at its first occurrence (the induction heads' value path, attention
    frozen); layer 1's features there read the token before it, among their four strongest inputs (what the
    previous-token head brings), and have little influence on the prediction, since their part, where the
    induction head looks, is an attention pattern the graph holds fixed."""
    engine = Engine.load("demo", ["demo:transcoders"], device="cpu")
    wrong = case.prompt.split(" ")[-1]  # the last token, the model's other choice
    graph = engine.graph(case.prompt, targets=[case.metric.target], wrong=f" {wrong}")
    target = len(graph.nodes) - 1
    source, weight = graph.inputs(target, 1)[0]
    copied = graph.nodes[source]
    assert (copied.kind, copied.position) == ("embed", case.key), f"{case}: strongest input {copied}"
    assert weight > 0, case
    features = [i for i, n in enumerate(graph.nodes[: graph.n_features]) if n.layer == 1 and n.position == case.key]
    reading_before = [
        i
        for i in features
        if any(
            graph.nodes[j].kind == "embed" and graph.nodes[j].position == case.key - 1 for j, _ in graph.inputs(i, 4)
        )
    ]
    assert reading_before, f"{case}: no layer-1 feature at the first answer reads the token before it"
    most = max(n.influence for n in graph.nodes[: graph.n_features])
    # a tenth of the most influential feature's at most (on 12 fresh prompts: 0.0003 to 0.031 of it)
    assert max(graph.nodes[i].influence for i in reading_before) < 0.1 * most, case
