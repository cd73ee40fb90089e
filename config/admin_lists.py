"""Admin lists of tables that only grow (the ledger): pages that cost the same at 1 thousand
rows and at 10 million (issue 23).

Django's changelist counts the filtered rows on every page (`paginator.count`, for "N results"
and the page numbers) and reaches page p with `OFFSET (p - 1) * per_page`: both read every row
they count or skip, so on 5 million ledger entries a page took 8 to 27 s. A `KeysetListAdmin`
changelist instead:

- reads a page in two steps: the page's ids first (the filtered query with only the primary
  key selected, which the planner answers from an index: a user's entries from
  `entry_account_newest` alone), then those rows with their related ones by primary key;
- counts nothing: it reads one row more than a page to know whether there is a next one, and
  shows *Newest*, *Newer* and *Older* links instead of page numbers (Django's own
  `show_full_result_count = False` only drops the second, unfiltered count);
- moves by keyset: `?before=ID` is the page of rows older than ID (`id < ID ORDER BY id DESC
  LIMIT n + 1`), `?after=ID` the page of newer ones, read in the other direction and turned
  round; the primary key serves both, so a page deep in the table costs what the first does.
  `?p=` is ignored (a page number would need the OFFSET);
- sorts by the primary key only (newest first by default, or oldest first): it is the one order
  an index serves for every filter. A column that sorts says so with `ordering="id"` (the
  ledger's time column: ids grow with time); any other requested order falls back to the
  default;
- offers no facet counts (Django 5's "Show counts": one COUNT per filter choice).

Filters and the search still narrow the rows; each must be one an index serves (the ledger's
user filter reads `entry_account_newest`, its search exact keys), and the admin site's
statement timeout (config/admin_site.py) stops one that is not.
"""

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import ShowFacets
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest

BEFORE = "before"
AFTER = "after"


def _bound(params: dict[str, Any], name: str) -> int | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        # The admin turns IncorrectLookupParameters into a redirect to `?e=1` ("an error").
        raise admin.options.IncorrectLookupParameters(f"{name} must be a row id")
    return value


class KeysetChangeList(ChangeList):
    """The changelist of a `KeysetListAdmin` (module docstring)."""

    def get_filters_params(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        lookup_params = super().get_filters_params(params)
        for name in (BEFORE, AFTER):
            lookup_params.pop(name, None)
        return lookup_params

    def get_ordering(self, request: HttpRequest, queryset: Any) -> list[Any]:
        requested = [str(field) for field in super().get_ordering(request, queryset)]
        self.newest_first = not (bool(requested) and requested[0] in ("id", "pk"))
        return ["-pk"] if self.newest_first else ["pk"]

    def get_results(self, request: HttpRequest) -> None:
        before = _bound(self.params, BEFORE)
        after = _bound(self.params, AFTER)
        if before is not None and after is not None:
            raise admin.options.IncorrectLookupParameters("before or after, not both")
        newest_first = self.newest_first
        rows = self.queryset
        if before is not None:
            rows = rows.filter(pk__lt=before)
        if after is not None:
            rows = rows.filter(pk__gt=after)
        # Towards the list's end (older rows when newest first) is the index's direction; back
        # towards its start, the page is read the other way round and turned.
        backwards = (after is not None) if newest_first else (before is not None)
        if backwards:
            rows = rows.reverse()
        # Two steps: the page's ids (a query of the filtered table's indexes only, with no
        # join), then its rows with their related ones by primary key. In one step the planner
        # may walk the primary key through everyone's rows to find a filter's few.
        ids = list(rows.values_list("pk", flat=True)[: self.list_per_page + 1])
        rows_of_page = self.apply_select_related(self.root_queryset).filter(pk__in=ids)
        by_id = {row.pk: row for row in rows_of_page}
        page = [by_id[pk] for pk in ids if pk in by_id]
        more = len(page) > self.list_per_page
        page = page[: self.list_per_page]
        if backwards:
            page.reverse()
        moved = before is not None or after is not None
        has_next = (more and not backwards) or (backwards and bool(page))
        has_previous = (moved and not backwards) or (backwards and more)
        forward, back = (BEFORE, AFTER) if newest_first else (AFTER, BEFORE)
        self.next_url = (
            self.get_query_string({forward: page[-1].pk}, remove=[back, "p"]) if has_next else None
        )
        self.previous_url = (
            self.get_query_string({back: page[0].pk}, remove=[forward, "p"])
            if has_previous
            else None
        )
        self.first_url = self.get_query_string(remove=[BEFORE, AFTER, "p"]) if moved else None
        self.result_count = len(page)
        self.full_result_count = None
        self.show_full_result_count = False
        self.show_admin_actions = True
        self.result_list = page
        self.can_show_all = False
        self.multi_page = has_next or has_previous
        self.paginator = None


class KeysetListAdmin(admin.ModelAdmin):
    """A ModelAdmin whose list never counts and pages by keyset (module docstring)."""

    change_list_template = "admin/keyset_change_list.html"
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    list_per_page = 50

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return KeysetChangeList
