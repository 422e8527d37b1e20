"""Text handling: cleaning is light and stable; sentence splitting respects quotes and abbreviations."""

from kazstance.text import clean, split_sentences


def test_clean_collapses_whitespace_and_drops_invisible_characters():
    assert clean("  TikTok\u200b-ты\n\tжабу  керек \ufeff") == "TikTok-ты жабу керек"


def test_clean_is_idempotent():
    text = "«Бұл   дұрыс емес»,\u00a0– деді ол."
    assert clean(clean(text)) == clean(text)


def test_split_on_terminal_punctuation():
    assert split_sentences("Министр келісті. Депутат қарсы! Неге? Білмеймін…") == [
        "Министр келісті.", "Депутат қарсы!", "Неге?", "Білмеймін…"]


def test_quoted_speech_with_attribution_stays_one_sentence():
    text = "«Бұл дұрыс емес. Жабу керек», – деді ол. Ал министр келіспеді."
    assert split_sentences(text) == ["«Бұл дұрыс емес. Жабу керек», – деді ол.", "Ал министр келіспеді."]


def test_abbreviations_and_initials_do_not_end_sentences():
    text = "2023 ж. 4 млн. видео өшірілді. Бұл туралы А. Балаева айтты. Вопрос обсудят, т.е. позже. Конец."
    assert split_sentences(text) == [
        "2023 ж. 4 млн. видео өшірілді.", "Бұл туралы А. Балаева айтты.", "Вопрос обсудят, т.е. позже.", "Конец."]


def test_newlines_always_end_a_sentence_and_blank_lines_vanish():
    assert split_sentences("Тақырып\n\nБірінші сөйлем.\nЕкінші сөйлем") == ["Тақырып", "Бірінші сөйлем.", "Екінші сөйлем"]


def test_ellipsis_followed_by_capital_splits_but_lowercase_continues():
    assert split_sentences("Жабу керек... Бірақ кейін. Ойлана тұр... әлі ерте.") == [
        "Жабу керек...", "Бірақ кейін.", "Ойлана тұр... әлі ерте."]


def test_empty_text_has_no_sentences():
    assert split_sentences(" \n \t ") == []
