// The chat server's message payloads, as the decoded JSON bodies.
//
// Generated from schemas/chat-events.schema.json by
// `switchyard types --lang typescript`: edit the schema, not this file.
// A property that may be absent is optional (`?`); one that may be
// null, `| null`. A 64-bit integer is a number: exact up to 2^53.

/** A date and time as Json.NET writes it: YYYY-MM-DDTHH:MM:SS, an optional fraction, an optional Z or +hh:mm offset (no offset: the chat server's local time). */
export type Timestamp = string;

/** agentchat.replied: an agent replied to another in a private chat. */
export interface AgentReplied {
  AttachmentGuid?: string | null;
  Content?: string | null;
  FromAgentId: number;
  /** The site the event belongs to. */
  SiteId: number;
  Time: Timestamp;
  ToAgentId: number;
}

/** agent.status.changed: an agent's status changed (the design spells it Stauts). */
export interface AgentStatusLog {
  AgentId: number;
  /** The site the event belongs to. */
  SiteId: number;
  Stauts: number;
  Time: Timestamp;
}

/** A file attached to a chat. */
export interface Attachment {
  Uid?: string | null;
  Url?: string | null;
}

/** autoinvitation.log, .accepted and .refused: counts of an automatic invitation (the design spells InvitaionId and CampainId). */
export interface AutoInvitationLog {
  AcceptNumber: number;
  CampainId: number;
  InvitaionId: number;
  RefuseNumber: number;
  SetNumber: number;
  /** The site the event belongs to. */
  SiteId: number;
  Time: Timestamp;
}

/** ban.added: an agent banned a visitor, an address or a range of addresses. */
export interface Ban {
  AgentId: number;
  /** 0 visitor id, 1 ip, 2 ip range. */
  BanType: number;
  Comment?: string | null;
  IpFromOrVisitorId: number;
  IpTo?: number | null;
  /** The site the event belongs to. */
  SiteId: number;
}

/** cannedmessage.used: an agent used a canned message (the design spells it CannedMessgeId). */
export interface CannedMessage {
  AgentId: number;
  CannedMessgeId: number;
  ChatGuid: string;
  /** The site the event belongs to. */
  SiteId: number;
  Time: Timestamp;
}

/** A custom field of a form. */
export interface CustomField {
  Id: number;
  Name?: string | null;
  Value?: string | null;
}

/** One message of a chat. */
export interface ChatMessage {
  ChatAction?: number | null;
  Id: number;
  Message?: string | null;
  SenderName?: string | null;
  /** 0 visitor, 1 agent, 2 system, 3 chatbot. */
  SenderType: number;
  Time: Timestamp;
}

/** A transfer of a chat between agents or departments. */
export interface ChatTransferLog {
  FromId: number;
  IfSuccess?: boolean | null;
  Time: string;
  ToId: number;
  TransferType: number;
}

/** chat.ended: a chat, whole, when it ended. */
export interface Chat {
  AgentComment?: string | null;
  AgentIds?: number[];
  Attachments?: Attachment[];
  ChatGuid: string;
  ChatType?: number | null;
  CustomFields?: CustomField[];
  End: Timestamp;
  IfNewTicket?: boolean | null;
  Messages?: ChatMessage[];
  MissedChatStatus?: number | null;
  PreChatCompany?: string | null;
  PreChatDepartmentId?: number | null;
  PreChatEmail?: string | null;
  PreChatName?: string | null;
  PreChatPhone?: string | null;
  RatingGrade?: number | null;
  RequestPageUrl?: string | null;
  SessionId: number;
  /** The site the event belongs to. */
  SiteId: number;
  Start: Timestamp;
  TicketId?: string | null;
  TransferLogs?: ChatTransferLog[];
}

/** chat.queued: the visitors waiting in a department's queue, logged every five minutes. */
export interface ChatQueueLog {
  DepartmentId: number;
  LogTime: Timestamp;
  NumberOfQueue: number;
  /** The site the event belongs to. */
  SiteId: number;
}

/** chat.started: a chat began. */
export interface ChatStart {
  ChatOrOfflineMessageId: string;
  /** The site the event belongs to. */
  SiteId: number;
  VisitorId: number;
}

/** A column of an agent's list. */
export interface Column {
  EnumColumn: number;
  IfVisible: boolean;
  Width: number;
}

/** visitor.conversion.achieved: a visitor reached a conversion goal. */
export interface ConversionLog {
  ChatGuid?: string | null;
  ConversionAccelerateType?: number | null;
  ConversionId: number;
  ConversionName?: string | null;
  ConversionValue: number;
  CreateTime: Timestamp;
  DepartmentId?: number | null;
  Id: number;
  /** The site the event belongs to. */
  SiteId: number;
  VisitorId: number;
}

/** A custom variable of the visitor (the design spells its last two fields in lower case). */
export interface CustomVariable {
  Id: number;
  Name?: string | null;
  url?: string | null;
  value?: string | null;
}

/** manualinvitation.log: an agent's invitation of a visitor. */
export interface ManualInvitationLog {
  AgentId: number;
  Message?: string | null;
  /** The site the event belongs to. */
  SiteId: number;
  /** 0 missed, 1 accepted, 2 refused. */
  Status: number;
  TranscriptId: number;
  /** 0 chat, 1 offline message, 2 navigation. */
  TranscriptType: number;
}

/** offlinemessage.submitted: a message a visitor left while no agent was online. */
export interface OfflineMessage {
  AttachmentName?: string | null;
  Content?: string | null;
  CustomFields?: CustomField[];
  CustomVariables?: CustomVariable[];
  RouteToId?: number | null;
  RouteToType?: number | null;
  Segments?: number[];
  SessionId?: number | null;
  /** The site the event belongs to. */
  SiteId: number;
  TicketId?: number | null;
  Title?: string | null;
  VisitorCompany?: string | null;
  /** Empty, or an email address. */
  VisitorEmail?: string | null;
  VisitorName?: string | null;
  VisitorPhone?: string | null;
  visitorId?: string | null;
}

/** chat.rating.submitted: a visitor's rating of a chat. */
export interface Rating {
  ChatGuid: string;
  CustomFields?: CustomField[];
  CustomVariables?: CustomVariable[];
  IsSyncChatToRemoteServer?: boolean;
  /** The site the event belongs to. */
  SiteId: number;
  ratingComment?: string | null;
  ratingGrade: number;
}

/** agent.preference.changed: an agent saved their column preferences. */
export interface SavePreference {
  AgentId: number;
  Columns?: Column[];
  /** The site the event belongs to. */
  SiteId: number;
}

/** visitor.landed: visits counted for a campaign (the design spells it CampainId). */
export interface VisitLog {
  CampainId: number;
  /** The site the event belongs to. */
  SiteId: number;
  VisitCount: number;
}

/** chat.wrapup.submitted: an agent's wrap-up of a chat. */
export interface Wrapup {
  AgentId: number;
  CategoryId: number;
  CategoryList?: number[];
  /** The chat's guid. */
  Chat: string;
  Comment?: string | null;
  CustomFields?: CustomField[];
  /** The site the event belongs to. */
  SiteId: number;
  SubmitTime: Timestamp;
}

/** Each message type (lower case) and its payload's type. */
export interface MessageTypes {
  'agent.preference.changed': SavePreference;
  'agent.status.changed': AgentStatusLog;
  'agentchat.replied': AgentReplied;
  'autoinvitation.accepted': AutoInvitationLog;
  'autoinvitation.log': AutoInvitationLog;
  'autoinvitation.refused': AutoInvitationLog;
  'ban.added': Ban;
  'cannedmessage.used': CannedMessage;
  'chat.ended': Chat;
  'chat.queued': ChatQueueLog;
  'chat.rating.submitted': Rating;
  'chat.started': ChatStart;
  'chat.wrapup.submitted': Wrapup;
  'manualinvitation.log': ManualInvitationLog;
  'offlinemessage.submitted': OfflineMessage;
  'visitor.conversion.achieved': ConversionLog;
  'visitor.landed': VisitLog;
}

export type MessageType = keyof MessageTypes;
