"""Where residents live and who serves them: streets, communities, organisations."""
from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Street(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50, unique=True)
    district = fields.CharField(max_length=50, default="白云区")

    class Meta:
        table = "street"


class Community(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50, unique=True)
    # Short code used in QR scenes: qrscene_<code>.
    code = fields.CharField(max_length=32, unique=True)
    street = fields.ForeignKeyField("models.Street", related_name="communities")

    class Meta:
        table = "community"


class OrgKind:
    COMMITTEE = "committee"  # 居委会
    SOCIAL = "social"  # 社区社会组织
    VOLUNTEER = "volunteer"  # 志愿者组织
    SUBDISTRICT = "subdistrict"  # 街道办
    ALL = (COMMITTEE, SOCIAL, VOLUNTEER, SUBDISTRICT)
    LABELS = {COMMITTEE: "居委会", SOCIAL: "社区社会组织", VOLUNTEER: "志愿者组织", SUBDISTRICT: "街道办"}


class Organisation(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=80, unique=True)
    kind = fields.CharField(max_length=16)
    # A committee, social or volunteer organisation belongs to a community; a
    # sub-district office to a street.
    community = fields.ForeignKeyField("models.Community", related_name="organisations", null=True)
    street = fields.ForeignKeyField("models.Street", related_name="organisations", null=True)
    contact = fields.CharField(max_length=100, default="")

    class Meta:
        table = "organisation"


class RosterEntry(Model):
    """A household roster line kept by the committee; a phone on it verifies a resident."""

    id = fields.IntField(primary_key=True)
    community = fields.ForeignKeyField("models.Community", related_name="roster")
    name = fields.CharField(max_length=50)
    phone = fields.CharField(max_length=11)

    class Meta:
        table = "roster_entry"
        unique_together = (("community", "phone"),)
