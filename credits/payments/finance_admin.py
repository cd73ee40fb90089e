"""The admin's "Finance by month" page: the figures of `finance_report`, one row per month and
currency, newest first (read-only; seen with `payments.view_financereport`)."""

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from config.admin_site import ReadOnlyModelAdmin

from .finance import CREDIT_FIELDS, MONEY_FIELDS, finance_month, months_with_activity
from .models import FinanceReport

# A page shows at most this many months (newest first): each month is a few aggregates and one
# walk over that month's entries of purchase lots.
MONTHS_SHOWN = 24


@admin.register(FinanceReport)
class FinanceReportAdmin(ReadOnlyModelAdmin):
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        columns = [*MONEY_FIELDS, *CREDIT_FIELDS]
        rows = []
        for month in months_with_activity()[:MONTHS_SHOWN]:
            report = finance_month(month=month)
            for currency, figures in sorted(report.currencies.items()):
                rows.append(
                    {
                        "month": month,
                        "currency": currency,
                        "values": [getattr(figures, name) for name in columns],
                        "gap": figures.identity_gap(),
                    }
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Finance by month",
            "opts": self.model._meta,
            "columns": columns,
            "rows": rows,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/payments/finance_by_month.html", context)
