"""Template tags of the team view, for pages whose views another area owns (the review queue
and the flag page): they read the holds through selectors.team, so those views need no change."""
from django import template

from ..selectors import team as team_selectors

register = template.Library()


@register.simple_tag(takes_context=True)
def queue_holds(context, round_, kind):
    """The queue's holds (selectors.team.Holds), for `{% queue_holds round kind as holds %}`."""
    if round_ is None:
        return team_selectors.Holds()
    return team_selectors.queue_holds(round_id=round_.pk, kind=kind, user=context["user"])


@register.simple_tag(takes_context=True)
def flag_hold(context, flag):
    """Who else holds this flag (selectors.team.FlagHold) or None."""
    return team_selectors.flag_hold(flag=flag, user=context["user"])
