/** What `mailshare agent` writes to its watchdog before a graceful exit: its users were let go, nothing to kick. */
export const WATCHDOG_STOP = 'stop\n';
