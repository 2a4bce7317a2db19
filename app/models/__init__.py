"""All models, imported here so Alembic and the app see one metadata."""

# Feature modules register their tables by being imported; import their classes from them.
# indexes declares the district-scale indexes on those tables (it imports the models it needs).
from app.models import audit, calendar, consent, counts, imports, indexes, listings  # noqa: F401
from app.models.accounts import AccountToken, PasswordResetRequest, WebSession
from app.models.directory import (
    ClassHelper,
    ClassRole,
    Enrollment,
    Family,
    Guardian,
    SchoolClass,
    Student,
)
from app.models.messaging import (
    Category,
    DeliveryEvent,
    DeliveryMode,
    DeliveryStatus,
    DevMail,
    MailDelivery,
    MailMessage,
    MailPreference,
    MailRendering,
    MessageTranslation,
    Suppression,
    SuppressionLift,
    WebhookToken,
)
from app.models.people import (
    JoinNotices,
    Membership,
    MembershipStatus,
    PermissionChange,
    PlatformRole,
    Role,
    School,
    User,
    Visibility,
    listed_membership,
)
from app.models.support import SupportKind, SupportRequest, SupportStatus

__all__ = [
    "AccountToken",
    "PasswordResetRequest",
    "Category",
    "ClassHelper",
    "ClassRole",
    "DeliveryEvent",
    "DeliveryMode",
    "DeliveryStatus",
    "DevMail",
    "Enrollment",
    "Family",
    "Guardian",
    "MailDelivery",
    "MailMessage",
    "MailPreference",
    "MailRendering",
    "MessageTranslation",
    "JoinNotices",
    "Membership",
    "MembershipStatus",
    "PermissionChange",
    "PlatformRole",
    "Role",
    "School",
    "SchoolClass",
    "Student",
    "SupportKind",
    "SupportRequest",
    "SupportStatus",
    "Suppression",
    "SuppressionLift",
    "User",
    "Visibility",
    "WebSession",
    "WebhookToken",
    "listed_membership",
]
