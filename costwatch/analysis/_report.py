"""A comparison as text (with ``explain``: the arithmetic and the price sources) and as JSON."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from costwatch.analysis._economics import Comparison, Option, PipelineComparison, show


def _money(value: Decimal | None) -> str:
    return "n/a" if value is None else f"${show(value)}"


def _pct(rate: Decimal) -> str:
    return f"{show(rate * 100)}%"


def _option_rows(option: Option, volume: Decimal) -> list[str]:
    success = _pct(option.success_rate) + (" (assumed)" if option.success_assumed else "")
    return [
        f"  {option.name}  [{option.strategy}]",
        f"    variable  {_money(option.variable_per_request)} a request"
        f" = {_money(option.variable_per_request * volume)} a month",
        f"    fixed     {_money(option.fixed_per_month)} a month",
        f"    total     {_money(option.monthly(volume))} a month, "
        f"{_money(option.per_request(volume))} a request",
        f"    success   {success}  ->  {_money(option.per_success(volume))} per successful answer",
    ]


def _explain_option(option: Option) -> list[str]:
    rows = [f"    {option.name}:"]
    for f in option.variable:
        rows.append(f"      {f.label:<20} {_money(f.usd)} a request = {f.how}  [{f.source}]")
    for f in option.fixed:
        rows.append(f"      {f.label:<20} {_money(f.usd)} a month = {f.how}  [{f.source}]")
    rows.append(f"      success rate         {show(option.success_rate)}: {option.success_note}")
    return rows


def _pipeline_text(pc: PipelineComparison, explain: bool) -> list[str]:
    v = pc.monthly_requests
    rows = [f"{pc.pipeline}: {show(v)} requests a month ({pc.volume_note})"]
    rows += _option_rows(pc.current, v)
    for verdict in pc.candidates:
        rows += _option_rows(verdict.option, v)
        lo, hi = verdict.success_range
        per_lo, per_hi = verdict.per_success_range
        rows.append(
            f"    if success were {_pct(lo)}..{_pct(hi)}: "
            f"{_money(per_lo)}..{_money(per_hi)} per successful answer"
        )
        if verdict.break_even_requests is not None:
            rows.append(
                f"    break-even at {show(verdict.break_even_requests)} requests a month; "
                f"above it {verdict.cheaper_above} is cheaper per successful answer"
            )
        else:
            rows.append(
                f"    no break-even: {verdict.cheaper_above or 'neither'} is cheaper at any volume"
            )
        if verdict.payback_months is not None:
            rows.append(f"    a training run pays back in {show(verdict.payback_months)} months")
        elif verdict.option.training_run_usd:
            rows.append("    a training run never pays back at this volume")
    if explain:
        rows.append("  explain:")
        rows += _explain_option(pc.current)
        for verdict in pc.candidates:
            rows += _explain_option(verdict.option)
            rows.append(f"      break-even           {verdict.break_even_how}")
            rows.append(f"      payback              {verdict.payback_how}")
    return rows


def render_text(comparison: Comparison, *, explain: bool = False) -> str:
    """The comparison for people; ``explain`` adds every figure's arithmetic and price source."""
    rows = [f"traffic: {comparison.source}", ""]
    for pc in comparison.pipelines:
        rows += _pipeline_text(pc, explain)
        rows.append("")
    if not comparison.pipelines:
        rows.append("no costwatch.request pipelines in this traffic")
    return "\n".join(rows).rstrip() + "\n"


def as_dict(comparison: Comparison) -> dict[str, Any]:
    """Every figure, exact (decimal strings), with its arithmetic and source."""

    def opt(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return {
        "source": comparison.source,
        "pipelines": [
            {
                "pipeline": pc.pipeline,
                "monthly_requests": str(pc.monthly_requests),
                "volume_note": pc.volume_note,
                "current": pc.current.as_dict(pc.monthly_requests),
                "candidates": [
                    {
                        **v.option.as_dict(pc.monthly_requests),
                        "break_even_requests": opt(v.break_even_requests),
                        "break_even_how": v.break_even_how,
                        "cheaper_above_break_even": v.cheaper_above,
                        "payback_months": opt(v.payback_months),
                        "payback_how": v.payback_how,
                        "success_range": [str(v.success_range[0]), str(v.success_range[1])],
                        "per_success_range_usd": [
                            opt(v.per_success_range[0]),
                            opt(v.per_success_range[1]),
                        ],
                    }
                    for v in pc.candidates
                ],
            }
            for pc in comparison.pipelines
        ],
    }
