//! Issue 14: several nodes share bans, budgets and one view through a real redis-server.
