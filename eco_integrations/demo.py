"""The main job: forget Harry Potter on the embedded SmolLM2, and show it side by side."""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from ._prompting import render
from .backends._base import PreparedRow
from .backends.transformers import TransformersBackend
from .config import ECOPolicy, GenerationConfig
from .engine import ECO
from .guard import Guard

DEMO_TARGET = "harry-potter"
DEMO_GUARD_ID = "demo-harry-potter"
# Names the entities selector corrupts besides the mined ones. Mining keeps phrases that recur in
# the forget texts, so first names asked about on their own ("Ginny", "Albus") and objects named
# once ("Invisibility Cloak") slip through, and the model then recognises the story from them.
DEMO_TERMS = (
    "Harry Potter",
    "Harry",
    "Potter",
    "Hogwarts",
    "Hermione Granger",
    "Voldemort",
    "Dumbledore",
    "Albus",
    "Severus",
    "Ron Weasley",
    "Ginny",
    "Fred",
    "George",
    "Lily",
    "James",
    "Rubeus",
    "Hagrid",
    "Dursley",
    "Dursleys",
    "Tom Riddle",
    "Nagini",
    "Lupin",
    "Umbridge",
    "Quirrell",
    "Slytherin",
    "Ravenclaw",
    "Hufflepuff",
    "Hogsmeade",
    "Burrow",
    "Death Eaters",
    "Muggles",
    "Horcrux",
    "Horcruxes",
    "Invisibility Cloak",
    "Golden Snitch",
)


def read_lines(name: str) -> list[str]:
    """Non-empty lines of a packaged example file (``eco_integrations/data/<name>``)."""
    text = resources.files("eco_integrations").joinpath("data", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def fit_demo_guard(**kwargs: Any) -> Guard:
    """A guard with one target, fit on the packaged Harry Potter prompts and facts."""
    guard = Guard(guard_id=DEMO_GUARD_ID, **kwargs)
    guard.add_target(
        DEMO_TARGET,
        read_lines("harry_potter_forget.txt"),
        read_lines("harry_potter_retain.txt"),
        terms=DEMO_TERMS,
        # The demo's retain texts are mostly deliberate near misses (other fantasy series, other
        # boarding schools, alchemy's philosopher's stone, namesakes), so its cross-validated
        # false-positive rate is pessimistic for ordinary traffic; 3% on them keeps
        # cross-validated recall near 0.75.
        target_fpr=0.03,
        # A fictional world is named knowledge only the target owns: its titles and recurring
        # names ("Severus Snape", "Defence Against the Dark Arts") are forget-only phrases, and
        # namesakes of its people are synthesised as extra retain examples.
        knowledge=True,
        near_misses=True,
    )
    return guard


def run_demo(
    *, max_new_tokens: int = 48, show_progress: bool = True, restore_prompt_words: bool = False
) -> list[dict[str, Any]]:
    """Train the guard, then answer the demo prompts with the plain model and with ECO
    (``restore_prompt_words``: :class:`~eco_integrations.config.ECOPolicy`'s)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    config = GenerationConfig(max_new_tokens=max_new_tokens)  # checked before the model loads
    policy = ECOPolicy(restore_prompt_words=restore_prompt_words)
    eco = ECO(TransformersBackend.from_pretrained(), fit_demo_guard(), policy=policy)
    prompts = read_lines("demo_prompts.txt")
    rows = []
    for prompt in tqdm(prompts, desc="demo prompts", disable=not show_progress):
        plain = eco.backend.generate(
            [PreparedRow(render(eco.backend.tokenizer, prompt).input_ids)], config
        )[0]
        result = eco.generate([prompt], config=config)[0]
        rows.append(
            {
                "prompt": prompt,
                "flagged": result.decision.flagged,
                "score": result.decision.score,
                "plain": plain.text,
                "eco": result.text,
            }
        )
    rows.append({"seconds": time.perf_counter() - started})
    return rows
