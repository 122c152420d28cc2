"""Django admin: projects with members, schema versions (publish only), items, API tokens."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from labelling.models import ApiToken, Item, LabelSchema, Membership, Project
from labelling.schema import TEMPLATES, schema_errors, template
from labelling.services.projects import project_update, schema_publish
from labelling.services.tokens import token_revoke


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]
    fields = ["user", "role"]


class SchemaVersionInline(admin.TabularInline):
    model = LabelSchema
    extra = 0
    can_delete = False
    fields = ["version", "name", "created_at", "created_by"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "overlap", "item_count", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline, SchemaVersionInline]
    readonly_fields = ["created_by", "created_at", "updated_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_item_count=Count("items"))

    @admin.display(description=_("Items"), ordering="_item_count")
    def item_count(self, project: Project) -> int:
        return project._item_count

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if change and "overlap" in form.changed_data:
            # Through the service, so the new overlap reaches every item's target.
            project_update(project=obj, overlap=obj.overlap)


class SchemaPublishForm(forms.ModelForm):
    start_from = forms.ChoiceField(
        required=False,
        choices=[("", _("— write the definition below —"))]
        + [(name, name.replace("_", " ").capitalize()) for name in sorted(TEMPLATES)],
        help_text=_("Fill the definition from a template. Leave the definition empty to use it."),
    )

    class Meta:
        model = LabelSchema
        fields = ["project", "name", "start_from", "definition"]
        help_texts = {
            "definition": _('JSON: {"questions": [{"key", "type", "title", ...}, ...]}.'),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["definition"].required = False
        self.fields["definition"].widget = forms.Textarea(
            attrs={"rows": 30, "cols": 100, "class": "vLargeTextField", "spellcheck": "false"}
        )

    def clean(self):
        cleaned = super().clean()
        definition = cleaned.get("definition")
        if definition in (None, "", {}):
            if not cleaned.get("start_from"):
                raise forms.ValidationError(_("Write a definition or pick a template."))
            definition = template(cleaned["start_from"])
            cleaned["definition"] = definition
        problems = schema_errors(definition)
        if problems:
            lines = [
                f"{problem.get('question') or 'schema'}"
                + (f" · {problem['field']}" if problem.get("field") else "")
                + f": {problem['message']}"
                for problem in problems
            ]
            self.add_error("definition", lines)
        return cleaned


@admin.register(LabelSchema)
class LabelSchemaAdmin(admin.ModelAdmin):
    """Adding publishes a new version; published versions are shown read-only."""

    form = SchemaPublishForm
    list_display = ["project", "version", "name", "question_count", "created_at", "created_by"]
    list_filter = ["project"]

    class Media:
        css = {"all": ["labelling/admin.css"]}

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            # A published version is shown read-only: no publishing form, no definition field.
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["project", "name", "start_from", "definition"]
        return ["project", "version", "name", "pretty_definition", "created_at", "created_by"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["project", "version", "name", "pretty_definition", "created_at", "created_by"]

    def has_change_permission(self, request, obj=None) -> bool:
        # The change view stays reachable to read a version; saving is refused below.
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("Questions"))
    def question_count(self, schema: LabelSchema) -> int:
        return len(schema.definition.get("questions", []))

    @admin.display(description=_("Definition"))
    def pretty_definition(self, schema: LabelSchema):
        return format_html(
            "<pre>{}</pre>", json.dumps(schema.definition, indent=2, ensure_ascii=False)
        )

    def save_model(self, request, obj, form, change) -> None:
        if change:
            messages.error(request, _("Published versions cannot be edited; add a new version."))
            return
        published = schema_publish(
            project=form.cleaned_data["project"],
            definition=form.cleaned_data["definition"],
            name=form.cleaned_data.get("name", ""),
            created_by=request.user,
        )
        obj.pk = published.pk
        obj.version = published.version
        obj._state.adding = False
        messages.success(
            request, _("Published version %(version)s.") % {"version": published.version}
        )

    def response_change(self, request, obj):
        return self.response_post_save_change(request, obj)


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "first_message", "language", "consent", "status"]
    list_filter = ["project", "status", "consent", "language"]
    search_fields = ["external_id"]
    list_select_related = ["project"]
    readonly_fields = [
        "project", "external_id", "conversation", "candidate_replies", "metadata", "source",
        "license", "consent", "language", "status", "priority", "created_at", "updated_at",
    ]  # fmt: skip
    exclude = ["messages", "candidates"]

    class Media:
        css = {"all": ["labelling/admin.css"]}

    def has_add_permission(self, request) -> bool:
        return False  # items come in through import

    @admin.display(description=_("First message"))
    def first_message(self, item: Item) -> str:
        text = item.messages[0]["content"] if item.messages else ""
        return text[:90] + ("…" if len(text) > 90 else "")

    @admin.display(description=_("Conversation"))
    def conversation(self, item: Item):
        # Conversations are untrusted: every piece goes through format_html's escaping.
        return format_html(
            '<div class="conversation">{}</div>',
            format_html_join(
                "",
                '<div class="msg {}" dir="auto"><b>{}</b> <small>{}</small>'
                '<pre class="wrap">{}</pre></div>',
                ((m["role"], m["role"], m["id"], m["content"]) for m in item.messages),
            ),
        )

    @admin.display(description=_("Candidate replies"))
    def candidate_replies(self, item: Item):
        if not item.candidates:
            return "—"
        return format_html_join(
            "",
            '<div dir="auto"><b>{}</b><pre class="wrap">{}</pre></div>',
            ((c["id"].upper(), c["content"]) for c in item.candidates),
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "can_write", "last_used_at", "revoked_at"]
    list_filter = ["can_write"]
    fields = ["name", "user", "prefix", "projects", "can_write", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "last_used_at"]
    filter_horizontal = ["projects"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False  # keys are made with `manage.py create_api_token`, which shows them once

    @admin.action(description=_("Revoke selected tokens"))
    def revoke(self, request, queryset) -> None:
        for token in queryset:
            token_revoke(token=token)
        messages.success(request, _("Revoked %(count)d token(s).") % {"count": len(queryset)})
