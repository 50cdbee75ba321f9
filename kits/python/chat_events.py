"""The chat server's message payloads, as TypedDicts of the decoded JSON bodies.

Generated from schemas/chat-events.schema.json by
`switchyard types --lang python`: edit the schema, not this file.
A key that may be absent is NotRequired; one that may be null, Optional.
"""

from typing import NotRequired, Optional, TypedDict


Timestamp = str
"""A date and time as Json.NET writes it: YYYY-MM-DDTHH:MM:SS, an optional fraction, an optional Z or +hh:mm offset (no offset: the chat server's local time)."""


class AgentReplied(TypedDict):
    """agentchat.replied: an agent replied to another in a private chat."""
    AttachmentGuid: NotRequired[Optional[str]]
    Content: NotRequired[Optional[str]]
    FromAgentId: int
    SiteId: int
    """The site the event belongs to."""
    Time: Timestamp
    ToAgentId: int


class AgentStatusLog(TypedDict):
    """agent.status.changed: an agent's status changed (the design spells it Stauts)."""
    AgentId: int
    SiteId: int
    """The site the event belongs to."""
    Stauts: int
    Time: Timestamp


class Attachment(TypedDict):
    """A file attached to a chat."""
    Uid: NotRequired[Optional[str]]
    Url: NotRequired[Optional[str]]


class AutoInvitationLog(TypedDict):
    """autoinvitation.log, .accepted and .refused: counts of an automatic invitation (the design spells InvitaionId and CampainId)."""
    AcceptNumber: int
    CampainId: int
    InvitaionId: int
    RefuseNumber: int
    SetNumber: int
    SiteId: int
    """The site the event belongs to."""
    Time: Timestamp


class Ban(TypedDict):
    """ban.added: an agent banned a visitor, an address or a range of addresses."""
    AgentId: int
    BanType: int
    """0 visitor id, 1 ip, 2 ip range."""
    Comment: NotRequired[Optional[str]]
    IpFromOrVisitorId: int
    IpTo: NotRequired[Optional[int]]
    SiteId: int
    """The site the event belongs to."""


class CannedMessage(TypedDict):
    """cannedmessage.used: an agent used a canned message (the design spells it CannedMessgeId)."""
    AgentId: int
    CannedMessgeId: int
    ChatGuid: str
    SiteId: int
    """The site the event belongs to."""
    Time: Timestamp


class CustomField(TypedDict):
    """A custom field of a form."""
    Id: int
    Name: NotRequired[Optional[str]]
    Value: NotRequired[Optional[str]]


class ChatMessage(TypedDict):
    """One message of a chat."""
    ChatAction: NotRequired[Optional[int]]
    Id: int
    Message: NotRequired[Optional[str]]
    SenderName: NotRequired[Optional[str]]
    SenderType: int
    """0 visitor, 1 agent, 2 system, 3 chatbot."""
    Time: Timestamp


class ChatTransferLog(TypedDict):
    """A transfer of a chat between agents or departments."""
    FromId: int
    IfSuccess: NotRequired[Optional[bool]]
    Time: str
    ToId: int
    TransferType: int


class Chat(TypedDict):
    """chat.ended: a chat, whole, when it ended."""
    AgentComment: NotRequired[Optional[str]]
    AgentIds: NotRequired[list[int]]
    Attachments: NotRequired[list[Attachment]]
    ChatGuid: str
    ChatType: NotRequired[Optional[int]]
    CustomFields: NotRequired[list[CustomField]]
    End: Timestamp
    IfNewTicket: NotRequired[Optional[bool]]
    Messages: NotRequired[list[ChatMessage]]
    MissedChatStatus: NotRequired[Optional[int]]
    PreChatCompany: NotRequired[Optional[str]]
    PreChatDepartmentId: NotRequired[Optional[int]]
    PreChatEmail: NotRequired[Optional[str]]
    PreChatName: NotRequired[Optional[str]]
    PreChatPhone: NotRequired[Optional[str]]
    RatingGrade: NotRequired[Optional[int]]
    RequestPageUrl: NotRequired[Optional[str]]
    SessionId: int
    SiteId: int
    """The site the event belongs to."""
    Start: Timestamp
    TicketId: NotRequired[Optional[str]]
    TransferLogs: NotRequired[list[ChatTransferLog]]


class ChatQueueLog(TypedDict):
    """chat.queued: the visitors waiting in a department's queue, logged every five minutes."""
    DepartmentId: int
    LogTime: Timestamp
    NumberOfQueue: int
    SiteId: int
    """The site the event belongs to."""


class ChatStart(TypedDict):
    """chat.started: a chat began."""
    ChatOrOfflineMessageId: str
    SiteId: int
    """The site the event belongs to."""
    VisitorId: int


class Column(TypedDict):
    """A column of an agent's list."""
    EnumColumn: int
    IfVisible: bool
    Width: int


class ConversionLog(TypedDict):
    """visitor.conversion.achieved: a visitor reached a conversion goal."""
    ChatGuid: NotRequired[Optional[str]]
    ConversionAccelerateType: NotRequired[Optional[int]]
    ConversionId: int
    ConversionName: NotRequired[Optional[str]]
    ConversionValue: float
    CreateTime: Timestamp
    DepartmentId: NotRequired[Optional[int]]
    Id: int
    SiteId: int
    """The site the event belongs to."""
    VisitorId: int


class CustomVariable(TypedDict):
    """A custom variable of the visitor (the design spells its last two fields in lower case)."""
    Id: int
    Name: NotRequired[Optional[str]]
    url: NotRequired[Optional[str]]
    value: NotRequired[Optional[str]]


class ManualInvitationLog(TypedDict):
    """manualinvitation.log: an agent's invitation of a visitor."""
    AgentId: int
    Message: NotRequired[Optional[str]]
    SiteId: int
    """The site the event belongs to."""
    Status: int
    """0 missed, 1 accepted, 2 refused."""
    TranscriptId: int
    TranscriptType: int
    """0 chat, 1 offline message, 2 navigation."""


class OfflineMessage(TypedDict):
    """offlinemessage.submitted: a message a visitor left while no agent was online."""
    AttachmentName: NotRequired[Optional[str]]
    Content: NotRequired[Optional[str]]
    CustomFields: NotRequired[list[CustomField]]
    CustomVariables: NotRequired[list[CustomVariable]]
    RouteToId: NotRequired[Optional[int]]
    RouteToType: NotRequired[Optional[int]]
    Segments: NotRequired[list[int]]
    SessionId: NotRequired[Optional[int]]
    SiteId: int
    """The site the event belongs to."""
    TicketId: NotRequired[Optional[int]]
    Title: NotRequired[Optional[str]]
    VisitorCompany: NotRequired[Optional[str]]
    VisitorEmail: NotRequired[Optional[str]]
    """Empty, or an email address."""
    VisitorName: NotRequired[Optional[str]]
    VisitorPhone: NotRequired[Optional[str]]
    visitorId: NotRequired[Optional[str]]


class Rating(TypedDict):
    """chat.rating.submitted: a visitor's rating of a chat."""
    ChatGuid: str
    CustomFields: NotRequired[list[CustomField]]
    CustomVariables: NotRequired[list[CustomVariable]]
    IsSyncChatToRemoteServer: NotRequired[bool]
    SiteId: int
    """The site the event belongs to."""
    ratingComment: NotRequired[Optional[str]]
    ratingGrade: int


class SavePreference(TypedDict):
    """agent.preference.changed: an agent saved their column preferences."""
    AgentId: int
    Columns: NotRequired[list[Column]]
    SiteId: int
    """The site the event belongs to."""


class VisitLog(TypedDict):
    """visitor.landed: visits counted for a campaign (the design spells it CampainId)."""
    CampainId: int
    SiteId: int
    """The site the event belongs to."""
    VisitCount: int


class Wrapup(TypedDict):
    """chat.wrapup.submitted: an agent's wrap-up of a chat."""
    AgentId: int
    CategoryId: int
    CategoryList: NotRequired[list[int]]
    Chat: str
    """The chat's guid."""
    Comment: NotRequired[Optional[str]]
    CustomFields: NotRequired[list[CustomField]]
    SiteId: int
    """The site the event belongs to."""
    SubmitTime: Timestamp


MESSAGE_TYPES: dict[str, type] = {
    "agent.preference.changed": SavePreference,
    "agent.status.changed": AgentStatusLog,
    "agentchat.replied": AgentReplied,
    "autoinvitation.accepted": AutoInvitationLog,
    "autoinvitation.log": AutoInvitationLog,
    "autoinvitation.refused": AutoInvitationLog,
    "ban.added": Ban,
    "cannedmessage.used": CannedMessage,
    "chat.ended": Chat,
    "chat.queued": ChatQueueLog,
    "chat.rating.submitted": Rating,
    "chat.started": ChatStart,
    "chat.wrapup.submitted": Wrapup,
    "manualinvitation.log": ManualInvitationLog,
    "offlinemessage.submitted": OfflineMessage,
    "visitor.conversion.achieved": ConversionLog,
    "visitor.landed": VisitLog,
}
"""Each message type (lower case) and its payload's type."""
