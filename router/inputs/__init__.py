"""The API-neutral parts every API's request adapter builds its `Generate` from: a conversation's
turns (and their images, fetched and decoded here) as the worker's chat messages, and sampling."""
