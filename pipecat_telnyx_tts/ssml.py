"""SSML markup for the voices that read it (AWS Polly and Azure, with ``text_type="ssml"``)."""

from __future__ import annotations

import html

from pipecat.utils.text.phonemes import normalize_ipa


def phoneme(word: str, ipa: str) -> str | None:
    """``word`` wrapped in an SSML ``<phoneme>`` tag that says it as ``ipa``; None without IPA.

    Polly and Azure both take a phrase inside one tag, so a phrase is not split per word. The
    word is kept as written inside the tag (a voice that ignores the tag still says it), and
    both values are escaped, since the tag goes out inside the text of an SSML document.
    """
    ph = normalize_ipa(ipa)
    if not word.strip() or not ph:
        return None
    attribute, text = html.escape(ph), html.escape(word, quote=False)
    return f'<phoneme alphabet="ipa" ph="{attribute}">{text}</phoneme>'
