"""platform intervention: evidence, burden of proof, jury, complaints, ratings, hash-chained case
logs (intervention issue)

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import aftersales.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC = aftersales.store.tables.UTCDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _event_table(name: str, owner: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(f"{owner}_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=48), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("rule", sa.String(length=48), nullable=True),
        sa.Column("changes", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint(f"{owner}_id", "seq", name=op.f(f"uq_{name}_{owner}_id")),
    )


def upgrade() -> None:
    with op.batch_alter_table("orders") as b:
        b.add_column(sa.Column("reminded_at", UTC, nullable=True))
    with op.batch_alter_table("cases") as b:
        b.add_column(sa.Column("staff_due", UTC, nullable=True))
        b.add_column(sa.Column("proof_from", sa.String(length=8), nullable=True))
        b.add_column(sa.Column("proof_due", UTC, nullable=True))
        b.add_column(sa.Column("proof_requests", sa.Integer(), nullable=False,
                               server_default="0"))
        b.add_column(sa.Column("buyer_evidence", sa.Integer(), nullable=False,
                               server_default="0"))
        b.add_column(sa.Column("seller_evidence", sa.Integer(), nullable=False,
                               server_default="0"))
        b.add_column(sa.Column("jury_panel", JSON, nullable=False, server_default="[]"))
        b.add_column(sa.Column("jury_votes", JSON, nullable=False, server_default="[]"))
        b.add_column(sa.Column("penalty", sa.String(length=32), nullable=True))
        b.add_column(sa.Column("log_head", sa.String(length=64), nullable=False,
                               server_default=""))
        b.create_index(b.f("ix_cases_staff_due"), ["staff_due"], unique=False)
    with op.batch_alter_table("case_events") as b:
        b.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        b.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    _chain_existing_logs()
    _event_table("complaint_events", "complaint")
    op.create_table(
        "evidence",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("party", sa.String(length=8), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("media_type", sa.String(length=64), nullable=True),
        sa.Column("filename", sa.String(length=256), nullable=True),
        sa.Column("at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"],
                                name=op.f("fk_evidence_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evidence")),
    )
    with op.batch_alter_table("evidence") as b:
        b.create_index(b.f("ix_evidence_case_id"), ["case_id"], unique=False)
        b.create_index(b.f("ix_evidence_sha256"), ["sha256"], unique=False)
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("registered_at", UTC, nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("standing", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_table(
        "jury_seats",
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("juror_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("drawn_at", UTC, nullable=False),
        sa.Column("side", sa.String(length=8), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("voted_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"],
                                name=op.f("fk_jury_seats_case_id_cases")),
        sa.PrimaryKeyConstraint("case_id", "juror_id", name=op.f("pk_jury_seats")),
        sa.UniqueConstraint("task_id", name=op.f("uq_jury_seats_task_id")),
    )
    with op.batch_alter_table("jury_seats") as b:
        b.create_index(b.f("ix_jury_seats_juror_id"), ["juror_id"], unique=False)
    op.create_table(
        "complaints",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("buyer_id", sa.String(length=64), nullable=False),
        sa.Column("seller_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", UTC, nullable=False),
        sa.Column("seller_response", sa.Text(), nullable=True),
        sa.Column("resolved_at", UTC, nullable=True),
        sa.Column("resolved_by", sa.String(length=80), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("penalty", sa.String(length=32), nullable=True),
        sa.Column("points", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"],
                                name=op.f("fk_complaints_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_complaints")),
    )
    with op.batch_alter_table("complaints") as b:
        b.create_index(b.f("ix_complaints_order_id"), ["order_id"], unique=False)
        b.create_index(b.f("ix_complaints_buyer_id"), ["buyer_id"], unique=False)
        b.create_index(b.f("ix_complaints_seller_id"), ["seller_id"], unique=False)
        b.create_index(b.f("ix_complaints_status"), ["status"], unique=False)
    op.create_table(
        "ratings",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("buyer_id", sa.String(length=64), nullable=False),
        sa.Column("seller_id", sa.String(length=64), nullable=False),
        sa.Column("stars", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("rated_at", UTC, nullable=False),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("replied_at", UTC, nullable=True),
        sa.CheckConstraint("stars BETWEEN 1 AND 5", name=op.f("ck_ratings_stars_1_to_5")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"],
                                name=op.f("fk_ratings_order_id_orders")),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_ratings")),
    )
    with op.batch_alter_table("ratings") as b:
        b.create_index(b.f("ix_ratings_seller_id"), ["seller_id"], unique=False)


def _chain_existing_logs() -> None:
    """Logs written before this revision get their chain now, so `audit verify` can vouch for
    every entry from here on (it cannot vouch for edits made before the upgrade)."""
    from aftersales.store.audit import GENESIS, entry_hash

    conn = op.get_bind()
    ev = sa.table("case_events", sa.column("id", sa.Integer), sa.column("case_id", sa.String),
                  sa.column("seq", sa.Integer), sa.column("name", sa.String),
                  sa.column("at", UTC), sa.column("actor", sa.String),
                  sa.column("rule", sa.String), sa.column("changes", JSON),
                  sa.column("prev_hash", sa.String), sa.column("hash", sa.String))
    cases = sa.table("cases", sa.column("id", sa.String), sa.column("log_head", sa.String))
    rows = conn.execute(sa.select(ev).order_by(ev.c.case_id, ev.c.seq)).mappings().all()
    heads: dict[str, str] = {}
    for r in rows:
        prev = heads.get(r["case_id"], GENESIS)
        h = entry_hash(prev, r["case_id"], r["seq"], r["name"], r["at"], r["actor"], r["rule"],
                       r["changes"])
        conn.execute(sa.update(ev).where(ev.c.id == r["id"]).values(prev_hash=prev, hash=h))
        heads[r["case_id"]] = h
    for case_id, head in heads.items():
        conn.execute(sa.update(cases).where(cases.c.id == case_id).values(log_head=head))


def downgrade() -> None:
    with op.batch_alter_table("orders") as b:
        b.drop_column("reminded_at")
    for name in ("ratings", "complaints", "jury_seats", "users", "evidence", "complaint_events"):
        op.drop_table(name)
    with op.batch_alter_table("case_events") as b:
        b.drop_column("hash")
        b.drop_column("prev_hash")
    with op.batch_alter_table("cases") as b:
        b.drop_index(b.f("ix_cases_staff_due"))
        for col in ("log_head", "penalty", "jury_votes", "jury_panel", "seller_evidence",
                    "buyer_evidence", "proof_requests", "proof_due", "proof_from", "staff_due"):
            b.drop_column(col)
