// node-pg-migrate migration for tests/clients/migrate_check.sh. Tables are unqualified: they land
// in the schema that node-pg-migrate puts on search_path (--schema).
exports.up = (pgm) => {
  pgm.createTable('mig_a', {
    id: 'id',
    note: { type: 'text', notNull: true },
  });
};

exports.down = (pgm) => {
  pgm.dropTable('mig_a');
};
