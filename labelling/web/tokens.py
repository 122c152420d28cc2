"""The API tokens page: an admin's keys for pipelines; create (key shown once), revoke."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from labelling.models import ApiToken
from labelling.selectors.tokens import projects_administered, tokens_for_user
from labelling.services.tokens import token_create, token_revoke


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        label=_("Name"), max_length=200, help_text=_("What the key is for, e.g. 'nightly export'.")
    )
    projects = forms.ModelMultipleChoiceField(
        label=_("Projects"), queryset=None, widget=forms.CheckboxSelectMultiple
    )
    can_write = forms.BooleanField(
        label=_("Allow writes (imports, consent withdrawal, snapshots)"),
        required=False,
        initial=False,
        help_text=_("Leave unticked for a read-only key."),
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Only projects the user administers can be chosen; anything else fails validation.
        self.fields["projects"].queryset = projects_administered(user=user)


def _page(request: HttpRequest, form: TokenCreateForm, new_key: str | None = None,
          new_token: ApiToken | None = None, status: int = 200) -> HttpResponse:  # fmt: skip
    context = {
        "form": form,
        "tokens": tokens_for_user(user=request.user),
        "new_key": new_key,
        "new_token": new_token,
    }
    return render(request, "labelling/tokens.html", context, status=status)


def _require_admin(request: HttpRequest) -> None:
    # Only project admins handle keys here; everyone else gets the same 404 as a missing page.
    if not projects_administered(user=request.user).exists():
        raise Http404("No project you administer.")


@never_cache  # the response that shows a new key must not be kept by any cache
@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    _require_admin(request)
    if request.method == "GET":
        initial = {}
        slug = request.GET.get("project")
        if slug:
            initial["projects"] = projects_administered(user=request.user).filter(slug=slug)
        return _page(request, TokenCreateForm(user=request.user, initial=initial))
    form = TokenCreateForm(request.POST, user=request.user)
    if not form.is_valid():
        return _page(request, form, status=400)
    token, key = token_create(
        user=request.user,
        project_slugs=[project.slug for project in form.cleaned_data["projects"]],
        name=form.cleaned_data["name"],
        can_write=form.cleaned_data["can_write"],
    )
    # Rendered, not redirected: the key exists only in this response and is never stored.
    return _page(request, TokenCreateForm(user=request.user), new_key=key, new_token=token)


@login_required
@require_POST
def token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    _require_admin(request)
    token = ApiToken.objects.filter(pk=token_id, user=request.user).first()
    if token is None:
        raise Http404("Token not found.")
    token_revoke(token=token)
    messages.success(
        request,
        gettext("Token “%(name)s” (%(prefix)s…) is revoked.")
        % {"name": token.name, "prefix": token.prefix},
    )
    return redirect("tokens")
