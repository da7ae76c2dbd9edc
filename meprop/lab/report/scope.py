"""What the report shows and how to get more: the note under the page's title.

It names the benchmark profile(s) the inputs were measured with (their ``env`` records) and
the time-to-accuracy presets they hold, and says which command runs the fuller grid
(:attr:`meprop.lab.plan.profiles.Profile.fuller`) and every quick preset (``make report
CONVERGE_PRESETS=all``), so a first run's small report points to the rest.
"""

from __future__ import annotations

import html

from meprop.lab.converge.presets import CONVERGENCE_PRESETS
from meprop.lab.plan.profiles import PROFILES

__all__ = ["scope_html"]


def _profiles_part(profiles: list[str], cases: int) -> str:
    """The profile(s) shown and the fuller one's command; ``cases``: bench rows in the report."""
    if not profiles:
        return ""
    known = [PROFILES[p] for p in profiles if p in PROFILES]
    shown = ", ".join(f"<b>{html.escape(p)}</b>" for p in profiles)
    what = "; ".join(f"{html.escape(p.name)}: {html.escape(p.description)}" for p in known)
    text = (f"This report shows the benchmark profile{'s' if len(profiles) > 1 else ''} {shown} "
            f"({cases} case{'s' if cases != 1 else ''}{'; ' + what if what else ''}).")
    fuller = sorted({p.fuller for p in known if p.fuller and p.fuller not in profiles})
    for name in fuller:
        text += (f" The fuller grid: <code>make report PROFILE={html.escape(name)}</code> "
                 f"({html.escape(PROFILES[name].description)}).")
    others = [p for p in PROFILES if p not in profiles and p not in fuller]
    if others:
        text += (" Other profiles: " + ", ".join(f"<code>{html.escape(p)}</code>" for p in others)
                 + " (README, <i>Profiles</i>).")
    return text


def _presets_part(presets: list[str]) -> str:
    """The time-to-accuracy presets shown and how to run the others."""
    if not presets:
        return ""
    missing = [p for p in CONVERGENCE_PRESETS if p not in presets]
    text = ('"Does it pay off?" shows the time-to-accuracy preset' + ("s " if len(presets) > 1 else " ")
            + ", ".join(f"<b>{html.escape(p)}</b>" for p in presets) + ".")
    if missing:
        text += (" More: <code>make report CONVERGE_PRESETS=all</code> (every quick preset; "
                 "<code>meprop converge --preset NAME --quick</code> runs one: "
                 + ", ".join(html.escape(p) for p in missing) + ").")
    return text


def scope_html(records: list[dict], cases: int) -> str:
    """The note as one HTML paragraph ("" when the inputs name no profile and hold no preset)."""
    envs = [r.get("env") or {} for r in records if r.get("type") == "env"]
    profiles = sorted({str(e["profile"]) for e in envs if e.get("profile")},
                      key=lambda p: (list(PROFILES).index(p) if p in PROFILES else len(PROFILES), p))
    presets = sorted({str(r["preset"]) for r in records if r.get("type") == "convergence" and r.get("preset")},
                     key=lambda p: (list(CONVERGENCE_PRESETS).index(p) if p in CONVERGENCE_PRESETS
                                    else len(CONVERGENCE_PRESETS), p))
    parts = [part for part in (_profiles_part(profiles, cases), _presets_part(presets)) if part]
    return f'<p class="scope">{" ".join(parts)}</p>' if parts else ""
