"""``{{ value|show_id }}``: an id as the dashboard shows it, isolated and wrapped.

An id comes from a player. ``<bdi>`` keeps right-to-left letters in it from
reordering the text around it (and the text around from reordering it), and
the CSS class wraps a long id instead of letting it overflow the page.
"""

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def show_id(value: object) -> SafeString:
    """Escape ``value`` and isolate it in ``<bdi class="sl-id">``."""
    return format_html('<bdi class="sl-id">{}</bdi>', value)


@register.filter
def show_text(value: object) -> SafeString:
    """Escape free text (an audit reason, a name) and isolate it in ``<bdi class="sl-text">``.

    Like ``show_id`` without the monospace font: the rule on what the text may
    hold already refuses direction-changing characters, and the isolation
    keeps right-to-left words from reordering the table cell around them.
    """
    return format_html('<bdi class="sl-text">{}</bdi>', value)
