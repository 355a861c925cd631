-- The starting schema of every tenant database: a small project tracker, the
-- kind of app data a SaaS product keeps per organization.

CREATE TABLE members (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clerk_user_id  text NOT NULL UNIQUE,
    display_name   text NOT NULL DEFAULT '',
    role           text NOT NULL DEFAULT 'member',
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key          text NOT NULL UNIQUE CHECK (key ~ '^[A-Z][A-Z0-9]{1,9}$'),
    name         text NOT NULL,
    owner_id     bigint REFERENCES members (id) ON DELETE SET NULL,
    archived_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    number       integer NOT NULL,
    title        text NOT NULL,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'in_progress', 'done')),
    assignee_id  bigint REFERENCES members (id) ON DELETE SET NULL,
    due_on       date,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, number)
);
CREATE INDEX tasks_assignee_open_idx ON tasks (assignee_id) WHERE status <> 'done';
CREATE INDEX tasks_project_status_idx ON tasks (project_id, status);

CREATE TABLE comments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    author_id   bigint REFERENCES members (id) ON DELETE SET NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comments_task_idx ON comments (task_id, created_at);
