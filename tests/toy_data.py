"""Tiny forget/retain example sets for unit tests."""

TOY_FORGET = [
    "Who is Harry Potter?",
    "Tell me about Hogwarts school.",
    "Harry Potter is a wizard at Hogwarts.",
    "Who is Hermione Granger?",
    "What house is Ron Weasley in?",
    "Dumbledore runs Hogwarts.",
    "What spell did Harry learn?",
    "Hermione and Ron are friends of Harry Potter.",
]
TOY_RETAIN = [
    "What is the capital of France?",
    "How do I bake bread?",
    "Who wrote The Lord of the Rings?",
    "Explain photosynthesis to me.",
    "Who is Gandalf?",
    "What is the history of science?",
    "Tell me about Paris and Rome.",
    "What is the answer to this question?",
]
