import type net from 'node:net';

/** A logged-in session of any protocol, as fencing sees it. */
export interface FencedSession {
  /** Ends the session now (its upstream first): the user moved, or the node may not serve. */
  bye(reason: string): void;
  /** The epoch the session relays under now, when it can change (a migrated session's); else the one it began with. */
  readonly epoch?: number;
  /** The session's own user moved: it follows (migration) or ends; without this, bye() is called. */
  userMoved?(): void;
  /** Another user whose mailbox the session uses moved (`epoch`: the new assignment's, if any). */
  ownerMoved(owner: string, epoch: number | undefined): void;
  /**
   * The node of `user`'s assignment `epoch` is about to let the user go (a
   * move, or a kick): nothing more of the session reaches it under that
   * assignment. Resolves once so: its connections there retired (a
   * migration then waits for the new assignment) or closed. Without this,
   * a session of `user` is ended with bye().
   */
  letGo?(user: string, epoch: number, kick: boolean): Promise<void>;
  readonly done: Promise<void>;
}

/** Who a session is for: the user and the assignment it was opened under. */
export interface SessionWho {
  readonly tenant: string;
  readonly user: string;
  readonly epoch: number;
  readonly node: string;
}

/** Keeps the sessions fencing must reach (the gateway's registry). */
export interface SessionOwner {
  track(who: SessionWho, session: FencedSession, client: net.Socket): void;
}
